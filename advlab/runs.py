"""Working with finished runs: `advlab runs [DIR]` lists them with their headline numbers, `advlab export
RUN --format csv|markdown|latex` writes the robustness matrix as a table a paper can use, and
`advlab compare RUN ...` (`advlab.report.compare`) puts runs side by side."""
from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from advlab.errors import AdvlabError
from advlab.report import load_results
from advlab.robustness import NO_DEFENSE, WORST_CASE, WORST_SETTING

FORMATS = ("csv", "markdown", "latex")


def find_runs(root: Path) -> list[Path]:
    """Run directories (holding results.json) at `root` or up to two levels below it, newest first."""
    if not root.is_dir():
        raise AdvlabError(f"{root} is not a directory; give the folder your runs are in (default reports/)")
    found = {p.parent for pattern in ("results.json", "*/results.json", "*/*/results.json") for p in root.glob(pattern)}
    return sorted(found, key=lambda p: (p / "results.json").stat().st_mtime, reverse=True)


def headline(run: Path) -> dict[str, Any]:
    """name, date, model, data, clean accuracy and the worst-case robust accuracy (no defense, and the
    best defense's worst setting) of one run."""
    results = load_results(run)
    model, data = results.get("model") or {}, results.get("data") or {}
    rob = results.get("robustness") if isinstance(results.get("robustness"), dict) else {}
    columns = [c if isinstance(c, dict) else {} for c in rob.get("columns") or []]
    worst_row = next((r.get("accuracy") or [] for r in rob.get("rows") or [] if r.get("attack") == WORST_CASE), [])
    by_setting = [(c.get("setting"), c.get("defense"), v) for c, v in zip(columns, worst_row)]
    no_defense = next((v for setting, _, v in by_setting if setting == NO_DEFENSE), None)
    defended = [(v, d) for setting, d, v in by_setting if setting == WORST_SETTING and v is not None]
    return {"run": str(run), "name": results.get("name"), "created": results.get("created"),
            "model": model.get("name"), "data": f"{data.get('name')} (n = {data.get('n')})",
            "clean": (results.get("clean") or {}).get("accuracy"), "worst_case": no_defense,
            "best_defense": max(defended) if defended else None}


def format_runs(runs: list[Path]) -> str:
    """The table `advlab runs` prints."""
    if not runs:
        return "no runs found (a run is a folder with results.json)"
    lines = [f"{'run':44s} {'created':20s} {'model':24s} {'data':30s} {'clean':>6s} {'robust':>7s}  best defense"]
    for run in runs:
        try:
            h = headline(run)
        except AdvlabError as exc:
            lines.append(f"{str(run):44s} unreadable: {exc}")
            continue
        best = f"{_pct(h['best_defense'][0])} {h['best_defense'][1]}" if h["best_defense"] else "-"
        lines.append(f"{_cut(h['run'], 44):44s} {str(h['created'] or '-'):20s} {_cut(str(h['model']), 24):24s} "
                     f"{_cut(h['data'], 30):30s} {_pct(h['clean']):>6s} {_pct(h['worst_case']):>7s}  {best}")
    return "\n".join(lines)


def export(run: Path, fmt: str) -> str:
    """The robustness matrix of `run` (clean, each attack, worst case x columns, in %) as csv, markdown
    or latex (booktabs)."""
    if fmt not in FORMATS:
        raise AdvlabError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    found = matrix(load_results(run))
    if found is None:
        raise AdvlabError(f"{run}/results.json has no robustness matrix (an older run, or a task without "
                          "per-image verdicts such as segmentation); re-run it with this advlab to get one")
    columns, rows = found
    table = [["attack", *columns], *[[name, *(_pct(v) for v in values)] for name, values in rows]]
    if fmt == "csv":
        out = io.StringIO()
        csv.writer(out, lineterminator="\n").writerows(table)
        return out.getvalue()
    if fmt == "markdown":
        header = "| " + " | ".join(table[0]) + " |"
        rule = "|---|" + "---:|" * len(columns)
        return "\n".join([header, rule, *("| " + " | ".join(r) + " |" for r in table[1:])]) + "\n"
    esc = [[_latex(cell) for cell in r] for r in table]
    body = [" & ".join(r) + r" \\" for r in esc[1:]]
    worst = len(body) - 1
    body[worst] = r"\midrule" + "\n" + body[worst]
    return "\n".join([r"\begin{tabular}{l" + "r" * len(columns) + "}", r"\toprule", " & ".join(esc[0]) + r" \\",
                      r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]) + "\n"


def matrix(results: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[float | None]]]] | None:
    """(column labels, [(row name, accuracy per column)]) with a clean row first; None without a matrix."""
    rob = results.get("robustness")
    if not isinstance(rob, dict) or not rob.get("columns") or not rob.get("rows"):
        return None
    columns = [str(c.get("label")) for c in rob["columns"]]
    rows = [("clean", [c.get("clean_accuracy") for c in rob["columns"]])]
    rows += [(str(r.get("attack")), list(r.get("accuracy") or [])) for r in rob["rows"]]
    return columns, rows


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, (int, float)) else f"{100 * value:.1f}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1):]


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "_": r"\_", "#": r"\#", "$": r"\$",
          "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in text)
