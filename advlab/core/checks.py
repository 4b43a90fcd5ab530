"""Validation of attack and defense settings: ValueError naming the field (never `assert`)."""
from __future__ import annotations

import re
from numbers import Real
from typing import Any

from advlab.core.errors import AdvlabError


def is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def positive_int(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_bool(name: str, value: bool) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")
    return value


def parse_number(value: Any) -> Any:
    """'10/255' -> 0.0392...; other values unchanged (YAML has no fractions)."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d*)?\s*/\s*\d+(\.\d*)?\s*", value):
        num, den = (float(v) for v in value.split("/"))
        if den == 0:
            raise AdvlabError(f"{value!r} divides by zero")
        return num / den
    return value
