"""A run's result where its user is: the terminal after `advlab attack | defend | run` (rich tables) and
a notebook cell (`Evaluation._repr_html_`): per threat model the robustness matrix (rows: clean, each
attack, the worst case; columns: model / defense / setting), the clean score, the warnings."""
from __future__ import annotations

import html
import io

from rich.console import Console
from rich.table import Table as RichTable

from advlab.core.results import Results
from advlab.report.robustness import published_text
from advlab.report.summary import matrices
from advlab.view import fmt

WITHIN_EPS = "* counted only where its adversarial lies within eps"


def clean_line(results: Results) -> str:
    scores = ", ".join(f"{name} {fmt.pct(value)}" for name, value in results.clean.items())
    return f"{results.model.name} on {results.data.name} (n = {results.data.n}): clean {scores}"


def published_line(results: Results, threat: str | None) -> str | None:
    """The model's published figures (a RobustBench entry's) where they belong to this threat model."""
    published = results.model.details.get("published")
    if not isinstance(published, dict) or threat is None:
        return None
    label = published.get("threat_model", {}).get("label") if isinstance(published.get("threat_model"), dict) else None
    return f"published: {published_text(published)}" if label == threat else None


def binarization_lines(results: Results, threat: str | None) -> list[str]:
    """One line per binarization test of this threat model: which evaluation, how many binarized models it
    fooled, the verdict."""
    lines = []
    for row in results.attacks:
        test = row.binarization_test
        if test is None or test.threat is None or test.threat.label != threat or test.n is None:
            continue
        where = fmt.row_column(row.to_dict())
        verdict = {True: "passed", False: "FAILED"}.get(test.passed, "no binarized model built")
        lines.append(f"binarization test, {row.method} ({where}): fooled {fmt.pct(test.success_rate)} of {test.n} "
                     f"binarized models: {verdict}")
    return lines


def text_summary(results: Results, *, width: int = 120, color: bool = False) -> str:
    """The matrices, the clean score and the warnings as terminal text (ANSI colours where `color`)."""
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=color, no_color=not color, highlight=False)
    console.print(clean_line(results), markup=False)
    for threat, columns, rows in matrices(results):
        console.print(f"robust accuracy, {threat or 'any distance (no threat model)'}", markup=False)
        table = RichTable()
        table.add_column("attack")
        for column in columns:
            table.add_column(column, justify="right")
        for name, values in rows:
            style = "bold" if name == "worst case" else None
            table.add_row(name, *(fmt.pct(v) for v in values), style=style)
        console.print(table)
        if any(name.endswith(" *") for name, _ in rows):
            console.print(WITHIN_EPS, markup=False)
        published = published_line(results, threat)
        if published:
            console.print(published, markup=False)
        for line in binarization_lines(results, threat):
            console.print(line, markup=False)
    for row in results.attacks:
        if row.measures.get("skipped"):
            console.print(f"{row.method} ({row.setting}): {row.measures['skipped']}", markup=False)
        elif not matrices(results):
            console.print(f"{row.method} ({row.setting}): success rate {fmt.pct(row.success_rate)}", markup=False)
    for found in results.warnings:
        console.print(f"warning [{found.check}] {found.where}: {found.message}; {found.advice}", markup=False,
                      style="yellow" if color else None)
    return out.getvalue()


def html_summary(results: Results) -> str:
    """The same as an HTML fragment (every value escaped), for notebooks."""
    e = html.escape
    parts = [f"<p>{e(clean_line(results))}</p>"]
    for threat, columns, rows in matrices(results):
        head = "".join(f"<th>{e(c)}</th>" for c in columns)
        body = "".join(
            f"<tr><td>{'<b>' + e(name) + '</b>' if name == 'worst case' else e(name)}</td>"
            + "".join(f"<td style='text-align:right'>{e(fmt.pct(v))}</td>" for v in values) + "</tr>"
            for name, values in rows)
        caption = e(f"robust accuracy, {threat or 'any distance (no threat model)'}")
        parts.append(f"<table><caption style='text-align:left'>{caption}</caption><tr><th>attack</th>{head}</tr>"
                     f"{body}</table>")
        if any(name.endswith(" *") for name, _ in rows):
            parts.append(f"<p><small>{e(WITHIN_EPS)}</small></p>")
        published = published_line(results, threat)
        if published:
            parts.append(f"<p><small>{e(published)}</small></p>")
        parts += [f"<p><small>{e(line)}</small></p>" for line in binarization_lines(results, threat)]
    parts += [f"<p style='color:#a60'>warning [{e(w.check)}] {e(w.where)}: {e(w.message)}; {e(w.advice)}</p>"
              for w in results.warnings]
    return "\n".join(parts)


__all__ = ["clean_line", "html_summary", "text_summary"]
