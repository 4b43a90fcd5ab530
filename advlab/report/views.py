"""A results row's view: its task's (`advlab.tasks`, each task carries a `TaskView`), looked up by
the row's `task` key; a row without one (results.json from before tasks existed) is of the catalog's
first task."""
from __future__ import annotations

from typing import Any

from advlab.tasks import TASKS
from advlab.view.task_view import TaskView

_UNKNOWN = TaskView()  # rows of a task this installation does not know


def view_for(row: dict[str, Any]) -> TaskView:
    """The view of a row's task; the base view for a task this installation does not know."""
    name = row.get("task")
    if name is None:
        return TASKS.in_order()[0].obj.view
    return TASKS.get(str(name)).obj.view if str(name) in TASKS else _UNKNOWN


def views_in(rows: list[dict[str, Any]]) -> list[TaskView]:
    """The views of the rows' tasks, in order of first appearance."""
    seen: list[TaskView] = []
    for row in rows:
        view = view_for(row)
        if view not in seen:
            seen.append(view)
    return seen
