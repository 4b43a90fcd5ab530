"""`advlab list`: the registered plugins with their capabilities, filtered by task, and one plugin's
settings with their types and defaults (read from its `__init__` signature)."""
from __future__ import annotations

import inspect
from typing import Any

from advlab.core.errors import AdvlabError


def for_task(plugins: dict[str, Any], task: str | None) -> dict[str, Any]:
    if task is None:
        return plugins
    from advlab.tasks import task_names

    if task not in task_names():
        raise AdvlabError(f"unknown task {task!r}; choose one of: {', '.join(task_names())}")
    return {name: info for name, info in plugins.items() if info.supports(task)}


def describe_plugin(name: str) -> str:
    """`advlab list NAME`: a plugin's summary and its settings with types and defaults."""
    from advlab.core import registry
    from advlab.core.settings import setting_types

    attacks, defenses = registry.attacks(), registry.defenses()
    if name not in attacks and name not in defenses:
        raise AdvlabError(f"no attack or defense named {name!r}; choose one of: "
                          f"{', '.join([*attacks, *defenses])}")
    info = attacks.get(name) or defenses[name]
    cls = info.cls
    head = f"{info.kind} {name}: {info.summary}"
    if info.kind == "attack":
        head += f"\n  threat={info.threat} tasks={','.join(sorted(info.tasks))}"
    hints = setting_types(cls)
    resolved = _resolved_defaults(cls)
    lines = [head, "settings:"]
    for param in inspect.signature(cls.__init__).parameters.values():
        if param.kind is not inspect.Parameter.KEYWORD_ONLY or param.name == "progress":
            continue
        kind = _type_name(hints.get(param.name, param.annotation))
        default = "required" if param.default is inspect.Parameter.empty else f"default {param.default!r}"
        if param.default is None and resolved.get(param.name) is not None:
            default += f" (= {resolved[param.name]!r})"  # what None picks, e.g. the Boundary Attack's budget
        lines.append(f"  {param.name:24s} {kind:14s} {default}")
    return "\n".join(lines)


def _resolved_defaults(cls: type) -> dict[str, Any]:
    """The plugin's settings as an instance built with its defaults holds them (a None default often
    picks a value); empty where it cannot be built without arguments."""
    try:
        instance = cls()
    except Exception:  # required settings, or a plugin that needs files: show the signature only
        return {}
    values = vars(instance)
    return {k: v for k, v in values.items() if isinstance(v, (int, float, str, bool))}


def _type_name(hint: Any) -> str:
    if hint is inspect.Parameter.empty:
        return "any"
    text = getattr(hint, "__name__", None) or str(hint)
    text = text.replace("typing.", "").replace("NoneType", "None")
    return text.replace("torch.nn.modules.module.Module", "nn.Module")


def format_plugins(attacks: dict, defenses: dict) -> str:
    lines = ["attacks:"]
    for info in attacks.values():
        lines.append(f"  {info.name:12s} threat={info.threat:9s} tasks={','.join(sorted(info.tasks)):27s} "
                     f"{info.summary}")
    lines.append("defenses:")
    lines += [f"  {i.name:12s} adaptive={'exact' if getattr(i.cls, 'differentiable', True) else 'bpda':5s}   "
              f"tasks={','.join(sorted(i.tasks)):36s} {i.summary}" for i in defenses.values()]
    if not defenses:
        lines.append("  (none)")
    return "\n".join(lines)


def format_catalogs() -> str:
    """The catalogs besides attacks and defenses: tasks, where models come from, image sources."""
    from advlab.data.sources import DATA
    from advlab.tasks import TASKS
    from advlab.zoo.models import MODELS

    lines = ["tasks:"]
    lines += [f"  {e.name:26s} score={e.obj.score_name:8s} {e.summary}" for e in TASKS]
    lines.append("models (the first source that claims a name loads it):")
    lines += [f"  {e.name:26s} task={e.meta['task'] or 'any'!s:15s} {e.meta['usage']}" for e in MODELS.in_order()]
    lines.append("image sources (--data):")
    lines += [f"  {e.meta['usage']:26s} {e.summary}" for e in DATA.in_order()]
    return "\n".join(lines)
