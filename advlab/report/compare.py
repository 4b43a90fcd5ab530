"""`advlab compare RUN_A RUN_B ...`: one self-contained HTML page with the runs' robustness matrices side
by side, cell by cell (the same threat model, attack and column in every run), each value's delta
against the first run highlighted, and the runs' headline numbers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advlab.core import atomic
from advlab.core.errors import AdvlabError
from advlab.core.results import read_results
from advlab.core.schema import WORST_CASE
from advlab.report import environment
from advlab.report.summary import headline, matrices
from advlab.view import fmt

DELTA = 0.005  # deltas smaller than half a point are not highlighted


@dataclass
class CompareCell:
    values: list[str]  # one per run
    deltas: list[tuple[str, str]]  # (text, css class) per run after the first


def compare_context(runs: list[Path]) -> dict[str, Any]:
    """One table per threat model (cells matched by threat model, attack and column across the runs)."""
    tables: dict[str | None, dict[tuple[str, str], list[Any]]] = {}
    columns: list[str] = []
    for i, run in enumerate(runs):
        found = matrices(read_results(run))
        if not found:
            raise AdvlabError(f"{run}/results.json has no robustness matrix; re-run it with this advlab to compare it")
        for threat, labels, rows in found:
            columns += [c for c in labels if c not in columns]
            table = tables.setdefault(threat, {})
            for name, values in rows:
                for column, value in zip(labels, values):
                    table.setdefault((name, column), [None] * len(runs))[i] = value
    out = []
    for threat, cells_of in tables.items():
        attacks = list(dict.fromkeys(name for name, _ in cells_of if name not in ("clean", WORST_CASE)))
        table = []
        for name in ["clean", *attacks, WORST_CASE]:
            cells = []
            for column in columns:
                values = cells_of.get((name, column), [None] * len(runs))
                cells.append(CompareCell([fmt.pct(v) for v in values], [_delta(values[0], v) for v in values[1:]]))
            table.append((name, cells))
        out.append({"threat": threat or "none (any distance counts)", "rows": table})
    return {"runs": [headline(r) for r in runs], "columns": columns, "tables": out,
            "names": [r.name for r in runs], "fmt": fmt}


def _delta(first: Any, value: Any) -> tuple[str, str]:
    if not isinstance(first, (int, float)) or not isinstance(value, (int, float)):
        return "", ""
    d = value - first
    css = "up" if d > DELTA else "down" if d < -DELTA else ""
    return f"{100 * d:+.1f}", css


def render_compare(runs: list[Path], out: Path) -> Path:
    """Write the comparison page of `runs` to `out`; return it."""
    if len(runs) < 2:
        raise AdvlabError("advlab compare needs at least two run directories")
    html = environment().get_template("compare.html").render(**compare_context(runs))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out, html)
    return out
