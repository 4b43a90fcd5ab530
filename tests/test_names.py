"""Knowledge stays where it belongs (issue 21): no module outside a task's package names that task,
and no module of the lab (`advlab/`) names a plugin. The names come from the catalogs, so a new task
or plugin is covered without editing this file.

What is not "naming" here: a declaration of what something is for. A plugin's or a model source's
`task=`/`tasks=` keyword and a model class's `task = ...` attribute say which task reads them; the
lab's catalogs then look the task up by that name. Plugins (`attacks/`, `defenses/`) may name other
plugins as settings (AutoAttack's suite is a list of attacks; HGD trains on FGSM/PGD adversarials):
that is composition through the catalog, and not the lab's code."""
from __future__ import annotations

import ast
from pathlib import Path

from advlab.core.registry import ATTACKS, DEFENSES
from advlab.tasks import TASKS

ROOT = Path(__file__).resolve().parents[1]
DECLARING = {"task", "tasks"}  # keywords and class attributes that declare a task


def _declarations(tree: ast.AST) -> set[int]:
    """ids of the string constants that are declarations: inside a `task=`/`tasks=` keyword value, or
    the value of a `task = ...` assignment in a class body."""
    found: set[int] = set()
    for node in ast.walk(tree):
        values: list[ast.AST] = []
        if isinstance(node, ast.keyword) and node.arg in DECLARING:
            values.append(node.value)
        if isinstance(node, ast.ClassDef):
            values += [s.value for s in node.body if isinstance(s, (ast.Assign, ast.AnnAssign)) and s.value is not None
                       and any(isinstance(t, ast.Name) and t.id in DECLARING
                               for t in (s.targets if isinstance(s, ast.Assign) else [s.target]))]
        found |= {id(c) for v in values for c in ast.walk(v) if isinstance(c, ast.Constant)}
    return found


def _named(path: Path, names: set[str]) -> list[tuple[int, str, bool]]:
    """(line, name, is a declaration) for every string constant of `path` equal to one of `names`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    declared = _declarations(tree)
    return sorted((c.lineno, c.value, id(c) in declared) for c in ast.walk(tree)
                  if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value in names)


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


def test_no_module_outside_a_task_package_names_that_task() -> None:
    tasks = set(TASKS.names())
    assert {"classification", "segmentation", "detection"} <= tasks
    bad = [f"{path.relative_to(ROOT)}:{line}: {name!r}"
           for path in _sources("advlab", "attacks", "defenses")
           for line, name, declaration in _named(path, tasks)
           if not declaration and (ROOT / "advlab" / "tasks" / name) not in path.parents]
    assert not bad, "a task named outside its package (look it up through the task instead):\n" + "\n".join(bad)


def test_the_lab_names_no_plugin() -> None:
    plugins = set(ATTACKS.names()) | set(DEFENSES.names())
    assert {"boundary", "pgd", "dag", "universal", "hgd", "jpeg"} <= plugins
    bad = [f"{path.relative_to(ROOT)}:{line}: {name!r}" for path in _sources("advlab")
           for line, name, _ in _named(path, plugins)]
    assert not bad, "a plugin named by the lab (ask the catalog or the attack instead):\n" + "\n".join(bad)


def test_the_scan_sees_a_name_and_a_declaration(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text('class M:\n    task = "detection"\n\n'
                      'x = register("a", tasks={"segmentation"})\n'
                      'if kind == "detection":\n    y = "pgd"\n')
    assert _named(module, {"detection", "segmentation", "pgd"}) == [
        (2, "detection", True), (4, "segmentation", True), (5, "detection", False), (6, "pgd", False)]
