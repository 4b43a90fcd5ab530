"""The attack and defense catalogs (`advlab.core.catalog`): `@register_attack` / `@register_defense`, and
the entry-point groups "advlab.attacks" and "advlab.defenses" through which third-party packages add
their own plugins."""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from advlab.core.catalog import ANY_TASK, Catalog, Entry
from advlab.core.errors import AdvlabError

__all__ = ["ANY_TASK", "ATTACKS", "DEFENSES", "PluginInfo", "attacks", "defenses", "get_attack", "get_defense",
           "register_attack", "register_defense"]

T = TypeVar("T")

PluginInfo = Entry  # an attack's or defense's catalog entry: name, cls, threat, tasks, summary

ATTACKS = Catalog("attack", group="advlab.attacks", noun="attack method",
                  builtin=("advlab.attacks.boundary", "advlab.attacks.gradient", "advlab.attacks.universal",
                           "advlab.attacks.dag", "advlab.attacks.apgd", "advlab.attacks.fab", "advlab.attacks.square",
                           "advlab.attacks.standard"))
DEFENSES = Catalog("defense", group="advlab.defenses",
                   builtin=("advlab.defenses.transforms", "advlab.defenses.hgd"))


def register_attack(name: str, *, threat: str, tasks: set[str], default: bool = False,
                    default_of: tuple[str, ...] = ()) -> Callable[[type[T]], type[T]]:
    """Class decorator: make an `Attack` subclass available as `--method NAME` (`default`: what a
    config without attacks runs; `default_of`: the library calls that run it when no attack is named,
    e.g. "advlab.evaluate")."""
    return ATTACKS.register(name, threat=threat, tasks=frozenset(tasks), default=default,
                            default_of=frozenset(default_of))


def default_attack_of(call: str) -> str:
    """The attack that declares itself the default of the library call `call` (e.g. "advlab.attack")."""
    found = ATTACKS.find(lambda e: call in e.meta.get("default_of", ()))
    if found is None:
        raise AdvlabError(f"no attack declares itself the default of {call}; name one")
    return found.name


def register_defense(name: str, *, tasks: set[str]) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a `Defense` subclass available by NAME (`tasks={ANY_TASK}`: on every task)."""
    return DEFENSES.register(name, tasks=frozenset(tasks))


def attacks() -> dict[str, Entry]:
    return ATTACKS.entries()


def defenses() -> dict[str, Entry]:
    return DEFENSES.entries()


def get_attack(name: str) -> Entry:
    return ATTACKS.get(name)


def get_defense(name: str) -> Entry:
    return DEFENSES.get(name)
