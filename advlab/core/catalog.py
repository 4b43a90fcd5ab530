"""One catalog mechanism for everything the lab looks up by name: attacks, defenses, tasks (each
with its report view), models and data sources (the pattern of timm's model registry: typed entries with metadata,
one lookup, listings and tests driven by the catalog rather than by hand-written lists).

A catalog fills itself on first use from its built-in modules, then from the modules named in its
entry-point group (`advlab.attacks`, `advlab.defenses`, `advlab.tasks`, `advlab.models`,
`advlab.data`): importing such a module registers its entries. A name registered
twice by different objects is an error, so a third-party package cannot silently replace a
built-in entry.
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from types import MappingProxyType
from typing import Any, TypeVar

from advlab.core.errors import AdvlabError

T = TypeVar("T")
ANY_TASK = "any"  # in a plugin's `tasks`: it runs on every task (e.g. an input transformation)
NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,39}")  # names become file names in run directories


@dataclass(frozen=True)
class Entry:
    """One catalog entry: `obj` is what the catalog hands out (a plugin class, a task instance, a
    loader function), `meta` what the catalog knows about it without building it."""

    name: str
    kind: str  # the catalog's kind: "attack", "defense", "task", "model", "data"
    obj: Any
    summary: str = ""
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def cls(self) -> Any:  # plugins: the class
        return self.obj

    @property
    def tasks(self) -> frozenset[str]:  # the tasks an attack or defense supports
        return frozenset(self.meta.get("tasks", ()))

    def supports(self, task: str) -> bool:
        """Whether an attack or defense runs on `task`: declared, or declared for any task."""
        return task in self.tasks or ANY_TASK in self.tasks

    @property
    def threat(self) -> str:  # attacks: "white-box" | "decision" | "score" | ...
        return str(self.meta.get("threat", ""))

    @property
    def origin(self) -> str:
        return f"{getattr(self.obj, '__module__', '?')}.{getattr(self.obj, '__qualname__', type(self.obj).__qualname__)}"


class Catalog:
    """Entries of one kind, by name. `register` (a decorator) or `add` fill it; `get`, `entries` and
    `find` read it, loading the built-in modules and the entry-point group first."""

    def __init__(self, kind: str, *, group: str, builtin: tuple[str, ...], noun: str | None = None) -> None:
        self.kind, self.group, self.builtin = kind, group, builtin
        self.noun = noun or kind  # in messages: "unknown attack method 'x'"
        self._entries: dict[str, Entry] = {}
        self._loaded = False

    def add(self, name: str, obj: Any, *, summary: str | None = None, **meta: Any) -> Entry:
        """Register `obj` under `name`; the same object again is a no-op, another one is an error."""
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ValueError(f"{self.kind} name {name!r} must be lower-case letters, digits, '_', '.' or '-' "
                             "(at most 40)")
        entry = Entry(name, self.kind, obj, first_line(obj) if summary is None else summary, MappingProxyType(meta))
        known = self._entries.get(name)
        if known is not None and known.origin != entry.origin:
            raise AdvlabError(f"{self.kind} {name!r} is registered twice, by {known.origin} and by {entry.origin}; "
                              "rename one of them (or uninstall the package that repeats it)")
        self._entries[name] = entry
        return entry

    def register(self, name: str, **meta: Any) -> Callable[[type[T]], type[T]]:
        """Class decorator: `add` the class under `name` and set its `name` attribute."""

        def wrap(cls: type[T]) -> type[T]:
            self.add(name, cls, **meta)
            cls.name = name  # type: ignore[attr-defined]
            return cls

        return wrap

    def load(self) -> None:
        """Import the built-in modules, then every module of the entry-point group (once)."""
        if self._loaded:
            return
        self._loaded = True
        for module in self.builtin:
            importlib.import_module(module)
        for ep in entry_points(group=self.group):
            try:
                ep.load()
            except AdvlabError:
                raise
            except Exception as exc:  # a broken third-party package must say so, not hide the others
                self._loaded = False
                raise AdvlabError(f"{self.kind} '{ep.name}' ({ep.value}) in entry-point group {self.group} failed "
                                  f"to import: {exc}; fix or uninstall that package") from exc

    def entries(self) -> dict[str, Entry]:
        self.load()
        return dict(sorted(self._entries.items()))

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries().values())

    def __contains__(self, name: object) -> bool:
        self.load()
        return name in self._entries

    def names(self) -> list[str]:
        return list(self.entries())

    def get(self, name: str) -> Entry:
        self.load()
        if name not in self._entries:
            raise AdvlabError(f"unknown {self.noun} {name!r}; choose one of: {', '.join(self.names()) or 'none'}"
                              + (" (see `advlab list`)" if self.kind in ("attack", "defense") else ""))
        return self._entries[name]

    def in_order(self) -> list[Entry]:
        """The entries in the order of the built-in modules that register them, then the others in
        registration order (whichever module a program happened to import first)."""
        self.load()
        rank = {module: i for i, module in enumerate(self.builtin)}
        return sorted(self._entries.values(), key=lambda e: rank.get(getattr(e.obj, "__module__", ""), len(rank)))

    def find(self, accepts: Callable[[Entry], bool]) -> Entry | None:
        """The first entry, in registration order, that `accepts`."""
        return next((e for e in self.in_order() if accepts(e)), None)


def first_line(obj: Any) -> str:
    doc = (getattr(obj, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else ""
