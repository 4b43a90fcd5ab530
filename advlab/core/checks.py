"""Validation of attack and defense settings: ValueError naming the field (never `assert`)."""
from __future__ import annotations

import math
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


def check_eps(eps: float, norm: str) -> float:
    """l_inf: eps in (0, 1] (pixels are in [0, 1]). l2: any positive finite eps, since the l2 diameter
    of [0, 1]^D is sqrt(D) and usual l2 budgets exceed 1 (e.g. 3.0 on ImageNet)."""
    if norm == "linf":
        if not is_real(eps) or not 0 < eps <= 1:
            raise ValueError(f"eps must be a number in (0, 1] for norm linf (pixels in [0, 1]), got {eps!r}")
    elif not is_real(eps) or not 0 < eps < math.inf:
        raise ValueError(f"eps must be a positive number for norm l2, got {eps!r}")
    return float(eps)


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
