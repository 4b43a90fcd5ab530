"""What a run's results say in a line or a table, for `advlab runs`, `export`, `compare`, the terminal
and a notebook: the headline numbers and the robustness matrices with their labels."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from advlab.core.results import Results, read_results
from advlab.core.schema import NO_DEFENSE, WORST_CASE, WORST_SETTING

Table = tuple[str | None, list[str], list[tuple[str, list[float | None]]]]  # (threat, columns, rows)


def headline(run: Path) -> dict[str, Any]:
    """name, date, model, data, the clean share of images right and the worst-case robust accuracy (no
    defense, and the best defense's worst setting) of one run, in its first threat model: the numbers of its
    matrix, as `export` and the report give them."""
    results = read_results(run)
    found = matrices(results)
    threat, _, rows = found[0] if found else (None, [], [])
    worst_row = next((values for name, values in rows if name == WORST_CASE), [])
    columns = results.robustness.columns if results.robustness else []
    by_setting = [(c.setting, c.defense, v) for c, v in zip(columns, worst_row)]
    no_defense = next((v for setting, _, v in by_setting if setting == NO_DEFENSE), None)
    defended = [(v, d) for setting, d, v in by_setting if setting == WORST_SETTING and v is not None]
    clean_row = next((values for name, values in rows if name == "clean"), [])
    # the matrix's clean share (what `export` and the report show; for dense tasks the per-image verdict's)
    clean = next((v for (setting, _, _), v in zip(by_setting, clean_row) if setting == NO_DEFENSE),
                 results.clean.get("accuracy"))
    return {"run": str(run), "name": results.name, "created": results.created, "model": results.model.name,
            "data": f"{results.data.name} (n = {results.data.n})", "clean": clean,
            "worst_case": no_defense, "threat": threat, "best_defense": max(defended) if defended else None}


def matrices(results: Results) -> list[Table]:
    """[(threat model label, column labels, [(row name, accuracy per column)])], one per threat model,
    each with a clean row first; [] without a matrix. An attack counted only where its adversarial lies
    within eps (unbounded, minimal, another norm or a larger eps) is marked ' *'."""
    rob = results.robustness
    if rob is None or not rob.columns:
        return []
    columns = [c.label for c in rob.columns]
    clean = ("clean", [c.clean_accuracy for c in rob.columns])
    return [(m.threat.label if m.threat else None, columns,
             [clean, *((r.attack + (" *" if r.counted == "within eps" else ""), list(r.accuracy)) for r in m.rows)])
            for m in rob.matrices if m.rows]
