"""HTML report of one run directory: `render_report(run_dir)` writes RUN_DIR/index.html.

The page is self-contained (inline CSS, images as data: URIs, no JavaScript) and every value
taken from results.json is HTML-escaped by the template engine.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from advlab.core import atomic
from advlab.core.results import read_results_json
from advlab.report.context import build_context

__all__ = ["environment", "load_results", "render_html", "render_report"]

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"


def environment() -> Environment:
    """The jinja2 environment: templates next to this module, autoescaping always on."""
    return Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=select_autoescape(enabled_extensions=("html",), default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def load_results(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/results.json as the dict the template reads (`read_results_json`: a missing file, bad JSON or
    another schema version is one line; a broken key is rendered as far as it goes)."""
    return read_results_json(run_dir)


def render_html(run_dir: str | Path, results: dict[str, Any] | None = None) -> str:
    """The report page as a string (results.json is read from `run_dir` unless given)."""
    run_dir = Path(run_dir)
    if results is None:
        results = load_results(run_dir)
    return environment().get_template("index.html").render(**build_context(run_dir, results))


def render_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/index.html from RUN_DIR/results.json and the arrays files; return its path."""
    run_dir = Path(run_dir)
    html = render_html(run_dir)
    out = run_dir / "index.html"
    atomic.write_text(out, html)
    return out
