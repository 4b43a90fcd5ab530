"""The manual: its runnable Python blocks run as written (a small real classifier as `model`), and every name
the API exports is documented (a docstring, and a place on the API reference page that mkdocstrings renders;
`make docs` builds the site with warnings as errors)."""
from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import advlab
from advlab.api.evaluation import Evaluation

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"<!-- runnable -->\n```python\n(.*?)```", flags=re.S)


def runnable_blocks() -> dict[str, list[str]]:
    found = {page.name: RUNNABLE.findall(page.read_text(encoding="utf-8")) for page in sorted(DOCS.glob("*.md"))}
    return {name: blocks for name, blocks in found.items() if blocks}


def test_the_manual_marks_runnable_blocks():
    assert runnable_blocks().get("python.md"), "docs/python.md lost its runnable blocks"


@pytest.mark.parametrize("page", sorted(runnable_blocks()))
def test_the_manual_s_runnable_blocks_run_as_written(page, digits, tmp_path, monkeypatch, one_thread):
    from test_api import users_model

    monkeypatch.chdir(tmp_path)
    scope = {"advlab": advlab, "model": users_model(digits), "x": digits.x_test[:24], "y": digits.y_test[:24]}
    for block in runnable_blocks()[page]:
        exec(block, scope)  # the manual's own text, in order, sharing names as a reader's session would
    if page == "python.md":  # the effects the page describes
        assert float((scope["result"].x_adv - scope["x"]).abs().max()) <= 8 / 255 + 1e-6
        assert bool(scope["result"].success.any())
        (row, test), = scope["ev"].binarization_tests
        assert row.method == "pgd" and test.n > 0 and test.passed  # PGD-20 finds the known adversarials
        assert scope["ev"].report.is_file()


def api_reference() -> set[str]:
    return set(re.findall(r"^::: ([\w.]+)", (DOCS / "api.md").read_text(encoding="utf-8"), flags=re.M))


def test_every_exported_name_is_on_the_api_reference_page_with_a_docstring():
    documented = api_reference()
    for name in advlab.__all__:
        obj = getattr(advlab, name)
        assert inspect.getdoc(obj), f"advlab.{name} has no docstring"
        assert f"{obj.__module__}.{obj.__name__}" in documented, f"advlab.{name} is not in docs/api.md"


def test_every_public_member_of_the_documented_classes_has_a_docstring():
    import importlib

    for path in api_reference():
        module, _, name = path.rpartition(".")
        obj = getattr(importlib.import_module(module), name)
        assert inspect.getdoc(obj), f"{path} has no docstring"
        if obj is Evaluation:  # the result a user reads: every public member documented
            for member, value in vars(obj).items():
                if not member.startswith("_"):
                    target = value.fget if isinstance(value, property) else value
                    assert inspect.getdoc(target), f"{path}.{member} has no docstring"


def test_the_site_configuration_names_every_page():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    pages = {p.name for p in DOCS.glob("*.md")}
    assert pages == set(re.findall(r"(?:: |- )(\w[\w-]*\.md)$", nav, flags=re.M)), "a docs page is missing from the nav"


def settings_blocks() -> list[tuple[str, str, str]]:
    """(page, plugin, text) of every `$ advlab list NAME` block of the manual."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for name, text in re.findall(r"```text\n\$ advlab list ([\w-]+)\n(.*?)\n```", page.read_text(encoding="utf-8"),
                                     flags=re.S):
            found.append((page.name, name, text))
    return found


def test_the_manual_s_settings_blocks_are_what_the_catalog_says():
    """Every attack and defense of the catalog has its settings on a page of the manual, exactly as `advlab list NAME` prints
    them: a renamed setting or a changed default fails here until the manual says so."""
    from advlab.cli.listing import describe_plugin
    from advlab.core.registry import attacks, defenses

    blocks = settings_blocks()
    built_in = {name for name, info in {**attacks(), **defenses()}.items() if info.cls.__module__.startswith("advlab.")}
    assert {name for _, name, _ in blocks} >= built_in, "a built-in plugin has no settings block in docs/"
    for page, name, text in blocks:
        assert text == describe_plugin(name), f"docs/{page}: the settings of {name} differ from `advlab list {name}`"
