"""Threat models: a norm and a budget, the only thing a robust accuracy can be defined against.

"Robust accuracy" without a threat model is not a number: an attack that minimises the perturbation
without a bound (the Boundary Attack) fools every image at some distance. A robustness matrix is
therefore built per threat model (Carlini et al., "On Evaluating Adversarial Robustness", arXiv
1902.06705, 2019, section 2; Croce & Hein, AutoAttack, ICML 2020), and an attack counts as fooling an
image only where its adversarial lies within eps in the threat's norm, whatever its own norm or bound
(its per-image distances are recorded for exactly this).

Written `linf:8/255` on the command line (`--threat`) and `threat: {norm: linf, eps: 8/255}` (or a list
of them) in YAML.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch

from advlab.core.checks import parse_number
from advlab.core.errors import AdvlabError
from advlab.core.norms import NORMS

THREAT_NORMS = tuple(NORMS)  # ("linf", "l2"): a matrix per threat model, in this order
REL_TOLERANCE, ABS_TOLERANCE = 1e-5, 1e-6  # float rounding of x + delta - x: a bounded attack's own eps is in


@dataclass(frozen=True)
class ThreatModel:
    norm: str  # "linf" | "l2", pixels in [0, 1]
    eps: float  # the budget: an adversarial counts only within it

    def label(self) -> str:
        """'linf eps 0.03137 (8/255)', the matrix heading."""
        fraction = self.eps * 255
        exact = f" ({round(fraction)}/255)" if abs(fraction - round(fraction)) < 1e-6 and fraction >= 1 else ""
        return f"{self.norm} eps {self.eps:.4g}{exact}"

    def as_dict(self) -> dict[str, Any]:
        return {"norm": self.norm, "eps": self.eps, "label": self.label()}

    def within(self, distance: torch.Tensor) -> torch.Tensor:
        """(N,) bool: distances (N,) in this norm that lie inside the budget (up to float rounding)."""
        return distance <= self.eps * (1 + REL_TOLERANCE) + ABS_TOLERANCE

    def contains(self, bound: tuple[str, float] | None) -> bool:
        """Whether an attack bounded by (norm, eps) stays inside this threat model by construction."""
        return bound is not None and bound[0] == self.norm and bound[1] <= self.eps * (1 + REL_TOLERANCE)


def threat_model(norm: Any, eps: Any, where: str) -> ThreatModel:
    """A checked threat model; one line naming `where` on a bad norm or eps."""
    eps = parse_number(eps)
    if isinstance(eps, str):
        try:
            eps = float(eps)
        except ValueError:
            pass  # named below
    if norm not in THREAT_NORMS:
        raise AdvlabError(f"{where}: norm must be one of {', '.join(THREAT_NORMS)}, got {norm!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < float("inf"):
        raise AdvlabError(f"{where}: eps must be a positive number (e.g. 8/255), got {eps!r}")
    if norm == "linf" and eps > 1:
        raise AdvlabError(f"{where}: an linf eps above 1 allows every image in [0, 1]; got {eps!r}")
    return ThreatModel(norm, float(eps))


def parse_threat(text: str) -> ThreatModel:
    """'linf:8/255' or 'l2:0.5' (the --threat flag) -> ThreatModel."""
    match = re.fullmatch(r"\s*(\w+)\s*:\s*(\S+)\s*", text)
    if not match:
        raise AdvlabError(f"--threat {text!r}: write NORM:EPS, e.g. --threat linf:8/255 or --threat l2:0.5")
    return threat_model(match.group(1), match.group(2), f"--threat {text!r}")


def threats_from_config(raw: Any, where: str) -> list[ThreatModel]:
    """`threat:` in YAML: one {norm, eps} mapping, 'NORM:EPS', or a list of either."""
    items = raw if isinstance(raw, list) else [raw]
    out = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if isinstance(raw, list) else where
        if isinstance(item, str):
            out.append(threat_model(*[*item.split(":", 1), None][:2], at))
        elif isinstance(item, dict) and set(item) <= {"norm", "eps"} and "norm" in item and "eps" in item:
            out.append(threat_model(item["norm"], item["eps"], at))
        else:
            raise AdvlabError(f"{at} must be {{norm: linf, eps: 8/255}} or 'linf:8/255', got {item!r}")
    return unique(out)


def derived_threats(bounds: Iterable[tuple[str, float] | None]) -> list[ThreatModel]:
    """The threat models a run's bounded attacks define when the user names none: one per distinct
    (norm, eps), linf first, smallest eps first."""
    found = {ThreatModel(norm, float(eps)) for norm, eps in (b for b in bounds if b is not None)
             if norm in THREAT_NORMS}
    return sorted(found, key=lambda t: (THREAT_NORMS.index(t.norm), t.eps))


def unique(threats: Iterable[ThreatModel]) -> list[ThreatModel]:
    out: list[ThreatModel] = []
    for threat in threats:
        out += [] if threat in out else [threat]
    return out
