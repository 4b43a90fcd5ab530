"""Number formatting for the report: every value from results.json may be missing, null or odd."""
from __future__ import annotations

import json
import math
from typing import Any

MISSING = "—"


def _number(value: Any) -> float | None:
    """The value as a float, or None when it is not a (non-bool) real number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def finite(value: Any) -> float | None:
    """A finite real number as float, else None."""
    v = _number(value)
    return v if v is not None and math.isfinite(v) else None


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a dict, else an empty one (keys of results.json may be null)."""
    return value if isinstance(value, dict) else {}


def _special(value: Any) -> str | None:
    """Text for None, non-numbers, NaN and infinities; None when `value` is a finite number."""
    if value is None:
        return MISSING
    v = _number(value)
    if v is None:
        return str(value)
    if math.isnan(v):
        return MISSING
    if math.isinf(v):
        return "∞" if v > 0 else "-∞"
    return None


def pct(value: Any, digits: int = 1) -> str:
    """A rate in [0, 1] as a percentage: 0.9 -> '90.0%'."""
    special = _special(value)
    return special if special is not None else f"{float(value) * 100:.{digits}f}%"


def num(value: Any, sig: int = 3) -> str:
    """A float to `sig` significant digits (1.5 -> '1.50'); 1000 and above as a grouped integer."""
    special = _special(value)
    if special is not None:
        return special
    v = float(value)
    if v == 0:
        return "0"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) < 1e-3:
        return sci(v)
    return f"{v:#.{sig}g}".rstrip(".")


def integer(value: Any) -> str:
    """A count, rounded and grouped: 27000 -> '27,000'."""
    special = _special(value)
    return special if special is not None else f"{round(float(value)):,}"


def sci(value: Any, digits: int = 2) -> str:
    """Scientific notation: 1.5e-5 -> '1.50e-05'."""
    special = _special(value)
    return special if special is not None else f"{float(value):.{digits}e}"


def plain(value: Any) -> str:
    """Any JSON value as short text (params, metadata); containers as compact JSON."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return num(value, sig=4)
    if isinstance(value, (dict, list, tuple)):
        try:
            return json.dumps(value, sort_keys=True, default=str)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def joined(*parts: Any, sep: str = " · ") -> str:
    """The non-empty parts as text, joined; MISSING when none is left."""
    kept = [str(p) for p in parts if p not in (None, "", [], {})]
    return sep.join(kept) if kept else MISSING


def row_name(row: dict[str, Any]) -> str:
    """An attack row's name wherever it is shown: its method, and for a control row (results' "control", e.g.
    "permuted control") that as well, so a control is never named like the attack it controls."""
    method = plain(row.get("method"))
    if not row.get("baseline"):
        return method
    return f"{method} · {plain(row.get('control') or 'random baseline')}"


def row_column(row: dict[str, Any]) -> str:
    """The robustness-matrix column an attack row was measured in, as the matrix labels it: 'no defense', or
    'bit-depth 2 bits, no BPDA, adaptive' (a defense with its variant, and the setting), after the model's name
    in runs with several models."""
    defense = " ".join(plain(row[k]) for k in ("defense", "defense_variant") if row.get(k))
    where = f"{defense}, adaptive" if row.get("defense") else "no defense"
    return f"{plain(row['model'])} / {where}" if row.get("model") else where
