"""A plugin's settings, checked from its `__init__`: keyword-only names, defaults and annotated types
(int, float, str, bool, each optionally `| None`), so that a bad setting is one line naming it before
the plugin sees it."""
from __future__ import annotations

import inspect
import types
import typing
from typing import Any

import yaml

from advlab.core.checks import parse_number
from advlab.core.errors import AdvlabError
from advlab.core.threat import ThreatModel


def attack_defaults(cls: type) -> dict[str, Any]:
    """The keyword settings of an attack class with their defaults (for the resolved config)."""
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}


def within_threat(cls: type, params: dict[str, Any], threat: ThreatModel) -> dict[str, Any] | None:
    """An attack's settings bound to a threat model: its eps (and norm, where the attack has a norm setting)
    where `params` leave eps unset, as AutoAttack's `norm` and `eps` do; `params` as they are for an attack
    without eps or with its own; None for an attack of one fixed norm (fgsm: l_inf) that is another."""
    accepted = attack_defaults(cls)
    if "eps" not in accepted or "eps" in params:
        return params
    if "norm" in accepted:
        return {**params, "eps": threat.eps, "norm": threat.norm}
    if getattr(cls, "norm", None) != threat.norm:
        return None
    return {**params, "eps": threat.eps}


def instantiate(kind: str, name: str, cls: type, raw: dict[str, Any]) -> Any:
    """Build a registered attack or defense from its settings; an unknown, missing or bad setting
    becomes one line naming it."""
    settings = {p.name: p for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    params = {k: parse_number(v) for k, v in raw.items()}
    unknown = sorted(set(params) - set(settings))
    if unknown:
        raise AdvlabError(f"{kind} {name} has no setting {unknown[0]!r}; valid: {', '.join(settings) or 'none'}")
    missing = [n for n, p in settings.items() if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise AdvlabError(f"{kind} {name} needs the setting {missing[0]!r} (e.g. --{missing[0]} FILE, or "
                          f"`{missing[0]}: ...` in its YAML entry)")
    hints = setting_types(cls)
    params = {k: _setting(kind, name, k, v, hints.get(k)) for k, v in params.items()}
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        raise AdvlabError(f"{kind} {name}: {exc}") from None


def setting_types(cls: type) -> dict[str, Any]:
    """The annotated types of a plugin's keyword settings (strings resolved)."""
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # a third-party plugin's unresolvable annotation: no type checks
        return {}


_SCALARS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _setting(kind: str, name: str, key: str, value: Any, hint: Any) -> Any:
    """Check a setting's type against its annotation before the plugin compares it with anything
    (int, float, str, bool, each optionally `| None`); ints are accepted for floats."""
    options = typing.get_args(hint) if is_union(hint) else (hint,)
    if value is None and type(None) in options:
        return None
    scalars = [o for o in options if o in _SCALARS]
    if not scalars or len(scalars) + (type(None) in options) < len(options):
        return value  # a type we do not check (the plugin validates it)
    for option in scalars:
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if type(value) is option:
            return value
    wanted = " or ".join(_SCALARS[o] for o in scalars) + (" (or null)" if type(None) in options else "")
    raise AdvlabError(f"{kind} {name}: setting {key} must be {wanted}, got {value!r}")


def is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


def parse_defenses(text: str) -> list[tuple[str, dict[str, Any]]]:
    """'jpeg:quality=50,median' -> [('jpeg', {'quality': 50}), ('median', {})]."""
    out = []
    for item in (i.strip() for i in text.split(",") if i.strip()):
        name, *pairs = item.split(":")
        settings = dict(key_value(pair, f"--defense {item!r}", "jpeg:quality=50") for pair in pairs)
        out.append((name.strip(), settings))
    return out


def key_value(text: str, where: str, example: str) -> tuple[str, Any]:
    """'max-passes=3' -> ('max_passes', 3): a setting written on the command line (value read as YAML)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise AdvlabError(f"{where}: write settings as KEY=VALUE, e.g. {example}")
    return key.strip().replace("-", "_"), yaml.safe_load(value)
