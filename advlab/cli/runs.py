"""Working with finished runs: `advlab runs [DIR]` lists them with their headline numbers, `advlab export
RUN --format csv|markdown|latex` writes the robustness matrix as a table a paper can use, and
`advlab compare RUN ...` (`advlab.report.compare`) puts runs side by side."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from advlab.core.errors import AdvlabError
from advlab.core.results import read_results
from advlab.report.summary import headline, matrices

FORMATS = ("csv", "markdown", "latex")


def find_runs(root: Path) -> list[Path]:
    """Run directories (holding results.json) at `root` or up to two levels below it, newest first."""
    if not root.is_dir():
        raise AdvlabError(f"{root} is not a directory; give the folder your runs are in (default reports/)")
    found = {p.parent for pattern in ("results.json", "*/results.json", "*/*/results.json") for p in root.glob(pattern)}
    return sorted(found, key=lambda p: (p / "results.json").stat().st_mtime, reverse=True)


def format_runs(runs: list[Path]) -> str:
    """The table `advlab runs` prints."""
    if not runs:
        return "no runs found (a run is a folder with results.json)"
    lines = [f"{'run':44s} {'created':20s} {'model':24s} {'data':30s} {'clean':>6s} {'robust':>7s} "
             f"{'threat model':26s} best defense"]
    for run in runs:
        try:
            h = headline(run)
        except AdvlabError as exc:
            lines.append(f"{run!s:44s} unreadable: {exc}")
            continue
        best = f"{_pct(h['best_defense'][0])} {h['best_defense'][1]}" if h["best_defense"] else "-"
        lines.append(f"{_cut(h['run'], 44):44s} {h['created'] or '-'!s:20s} {_cut(str(h['model']), 24):24s} "
                     f"{_cut(h['data'], 30):30s} {_pct(h['clean']):>6s} {_pct(h['worst_case']):>7s} "
                     f"{_cut(h['threat'] or '-', 26):26s} {best}")
    return "\n".join(lines)


def export(run: Path, fmt: str) -> str:
    """The robustness matrices of `run` (clean, each attack, worst case x columns, in %), one per threat
    model, as csv (a leading threat column), markdown or latex (booktabs), one table per threat model."""
    if fmt not in FORMATS:
        raise AdvlabError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    found = matrices(read_results(run))
    if not found:
        raise AdvlabError(f"{run}/results.json has no robustness matrix (an older run, or a task without "
                          "per-image verdicts such as segmentation); re-run it with this advlab to get one")
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["threat", "attack", *found[0][1]])
        for threat, _, rows in found:
            writer.writerows([threat or "", name, *(_pct(v) for v in values)] for name, values in rows)
        return out.getvalue()
    return "\n".join((_markdown if fmt == "markdown" else _latex_table)(*m) for m in found)


def _markdown(threat: str | None, columns: list[str], rows: list[tuple[str, list[float | None]]]) -> str:
    header = "| attack | " + " | ".join(columns) + " |"
    rule = "|---|" + "---:|" * len(columns)
    body = ["| " + " | ".join([name, *(_pct(v) for v in values)]) + " |" for name, values in rows]
    return "\n".join([f"Robust accuracy (%), threat model {threat or 'none'} (*: counted only within eps)", "",
                      header, rule, *body]) + "\n"


def _latex_table(threat: str | None, columns: list[str], rows: list[tuple[str, list[float | None]]]) -> str:
    esc = [[_latex(cell) for cell in r] for r in [["attack", *columns],
                                                  *[[name, *(_pct(v) for v in values)] for name, values in rows]]]
    body = [" & ".join(r) + r" \\" for r in esc[1:]]
    body[-1] = r"\midrule" + "\n" + body[-1]  # the worst case
    return "\n".join([f"% robust accuracy (%), threat model {_latex(threat or 'none')}",
                       r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule", " & ".join(esc[0]) + r" \\",
                       r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]) + "\n"


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{100 * value:.1f}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)
