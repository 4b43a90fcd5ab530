"""Plugin registry: `@register_attack` / `@register_defense` plus the entry-point groups
"advlab.attacks" and "advlab.defenses", through which third-party packages add their own."""
from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Callable, TypeVar

from advlab.errors import AdvlabError

T = TypeVar("T")

BUILTIN_MODULES = ("advlab.attacks.boundary", "advlab.attacks.gradient", "advlab.attacks.universal",
                   "advlab.attacks.dag", "advlab.attacks.apgd", "advlab.attacks.square", "advlab.attacks.standard",
                   "advlab.defenses.transforms", "advlab.defenses.hgd")


@dataclass(frozen=True)
class PluginInfo:
    name: str
    kind: str  # "attack" | "defense"
    cls: type
    threat: str = ""  # "decision" | "score" | "white-box" | "transfer" ...
    tasks: frozenset[str] = field(default_factory=frozenset)
    summary: str = ""


_ATTACKS: dict[str, PluginInfo] = {}
_DEFENSES: dict[str, PluginInfo] = {}
_loaded = False


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


PLUGIN_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")  # names become file names in run directories


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not PLUGIN_NAME.fullmatch(name):
        raise ValueError(f"plugin name {name!r} must be lower-case letters, digits, '_' or '-' (at most 40)")


def register_attack(name: str, *, threat: str, tasks: set[str]) -> Callable[[type[T]], type[T]]:
    """Class decorator: make an `Attack` subclass available as `--method NAME`."""
    _check_name(name)

    def wrap(cls: type[T]) -> type[T]:
        cls.name = name  # type: ignore[attr-defined]
        _ATTACKS[name] = PluginInfo(name, "attack", cls, threat, frozenset(tasks), _summary(cls))
        return cls

    return wrap


def register_defense(name: str, *, tasks: set[str]) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a `Defense` subclass available by NAME."""
    _check_name(name)

    def wrap(cls: type[T]) -> type[T]:
        cls.name = name  # type: ignore[attr-defined]
        _DEFENSES[name] = PluginInfo(name, "defense", cls, "", frozenset(tasks), _summary(cls))
        return cls

    return wrap


def load_plugins() -> None:
    """Import the built-in plugins and every module named in the entry-point groups (once)."""
    global _loaded
    if _loaded:
        return
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for group in ("advlab.attacks", "advlab.defenses"):
        for ep in entry_points(group=group):
            try:
                ep.load()
            except Exception as exc:  # a broken third-party plugin must not hide the others
                raise AdvlabError(
                    f"plugin '{ep.name}' ({ep.value}) in group {group} failed to import: {exc}; "
                    "fix or uninstall that package"
                ) from exc
    _loaded = True


def attacks() -> dict[str, PluginInfo]:
    load_plugins()
    return dict(sorted(_ATTACKS.items()))


def defenses() -> dict[str, PluginInfo]:
    load_plugins()
    return dict(sorted(_DEFENSES.items()))


def get_attack(name: str) -> PluginInfo:
    known = attacks()
    if name not in known:
        raise AdvlabError(f"unknown attack method '{name}'; choose one of: {', '.join(known)} (see `advlab list`)")
    return known[name]


def get_defense(name: str) -> PluginInfo:
    known = defenses()
    if name not in known:
        raise AdvlabError(f"unknown defense '{name}'; choose one of: {', '.join(known) or 'none installed'}")
    return known[name]
