"""What a run's results.json says in a line or a table, for `advlab runs`, `export` and `compare`:
the headline numbers and the robustness matrices with their labels."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from advlab.core.schema import NO_DEFENSE, WORST_CASE, WORST_SETTING
from advlab.report import load_results


def headline(run: Path) -> dict[str, Any]:
    """name, date, model, data, clean accuracy and the worst-case robust accuracy (no defense, and the
    best defense's worst setting) of one run, in its first threat model."""
    results = load_results(run)
    model, data = results.get("model") or {}, results.get("data") or {}
    found = matrices(results)
    threat, _, rows = found[0] if found else (None, [], [])
    worst_row = next((values for name, values in rows if name == WORST_CASE), [])
    by_setting = [(c.get("setting"), c.get("defense"), v) for c, v in zip(_columns(results), worst_row)]
    no_defense = next((v for setting, _, v in by_setting if setting == NO_DEFENSE), None)
    defended = [(v, d) for setting, d, v in by_setting if setting == WORST_SETTING and v is not None]
    return {"run": str(run), "name": results.get("name"), "created": results.get("created"),
            "model": model.get("name"), "data": f"{data.get('name')} (n = {data.get('n')})",
            "clean": (results.get("clean") or {}).get("accuracy"), "worst_case": no_defense,
            "threat": threat, "best_defense": max(defended) if defended else None}


def matrices(results: dict[str, Any]) -> list[tuple[str | None, list[str], list[tuple[str, list[float | None]]]]]:
    """[(threat model label, column labels, [(row name, accuracy per column)])], one per threat model,
    each with a clean row first; [] without a matrix. An attack counted only where its adversarial lies
    within eps (unbounded, minimal, another norm or a larger eps) is marked ' *'. A run from before threat models (one "rows" list,
    which counted unbounded attacks at any distance) reads as one matrix without a threat model."""
    rob = results.get("robustness")
    if not isinstance(rob, dict) or not rob.get("columns"):
        return []
    columns = [str(c.get("label")) for c in _columns(results)]
    clean = ("clean", [c.get("clean_accuracy") for c in _columns(results)])
    found = rob.get("matrices") if isinstance(rob.get("matrices"), list) else [{"threat": None, "rows": rob.get("rows")}]
    out = []
    for m in (m for m in found if isinstance(m, dict) and isinstance(m.get("rows"), list) and m["rows"]):
        threat = m.get("threat") if isinstance(m.get("threat"), dict) else {}
        rows = [(str(r.get("attack")) + (" *" if r.get("counted") == "within eps" else ""), list(r.get("accuracy") or []))
                for r in m["rows"] if isinstance(r, dict)]
        out.append((str(threat["label"]) if threat.get("label") else None, columns, [clean, *rows]))
    return out


def _columns(results: dict[str, Any]) -> list[dict[str, Any]]:
    rob = results.get("robustness") if isinstance(results.get("robustness"), dict) else {}
    return [c if isinstance(c, dict) else {} for c in rob.get("columns") or []]
