"""`advlab compare RUN_A RUN_B ...`: one self-contained HTML page with the runs' robustness matrices side
by side, cell by cell (the same attack and column in every run), each value's delta against the first
run highlighted, and the runs' headline numbers."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from advlab.errors import AdvlabError
from advlab.report import environment, fmt, load_results
from advlab.robustness import WORST_CASE
from advlab.runs import headline, matrix

DELTA = 0.005  # deltas smaller than half a point are not highlighted


@dataclass
class CompareCell:
    values: list[str]  # one per run
    deltas: list[tuple[str, str]]  # (text, css class) per run after the first


def compare_context(runs: list[Path]) -> dict[str, Any]:
    matrices = []
    for run in runs:
        table = matrix(load_results(run))
        if table is None:
            raise AdvlabError(f"{run}/results.json has no robustness matrix; re-run it with this advlab to compare it")
        columns, rows = table
        matrices.append({(name, column): value for name, values in rows for column, value in zip(columns, values)})
    columns: list[str] = []
    attacks: list[str] = []
    for m in matrices:
        for name, column in m:
            columns += [column] if column not in columns else []
            attacks += [name] if name not in attacks else []
    attacks = [a for a in attacks if a not in ("clean", WORST_CASE)]
    table = []
    for name in ["clean", *attacks, WORST_CASE]:
        cells = []
        for column in columns:
            values = [m.get((name, column)) for m in matrices]
            cells.append(CompareCell([fmt.pct(v) for v in values], [_delta(values[0], v) for v in values[1:]]))
        table.append((name, cells))
    return {"runs": [headline(r) for r in runs], "columns": columns, "table": table,
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
    out.write_text(html, encoding="utf-8")
    return out
