"""Norms as objects: what an attack needs of its threat model's norm in one place (the model is
foolbox 3's `distances`, Rauber et al., JOSS 2020): the per-image size of a perturbation, the
projection onto the eps-ball around the clean image (then onto [0, 1]), the unit steepest-ascent
direction of a gradient, and the check of a budget. Pixels are in [0, 1].

`NORMS` holds the norms attacks are bounded in (l_inf, l2); `MEASURES` adds the mean squared error,
a distance every results row reports without any attack being bounded in it."""
from __future__ import annotations

import math

import torch

from advlab.core.checks import is_real


class Measure:
    """A per-image distance between image batches."""

    name: str = ""

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        """(N, ...) perturbations -> (N,) their sizes in this measure."""
        raise NotImplementedError

    def distance(self, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
        """(N,) distances of `x_adv` from `x` (N, C, H, W), in float32."""
        return self.size((x_adv - x).flatten(1).float())


class Norm(Measure):
    """A norm an attack can be bounded in: its ball, its steepest ascent and its budget check."""

    def project(self, x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """`x` (N, C, H, W) onto the eps-ball around `x0`, then onto [0, 1] (which only shrinks the
        perturbation, so the result stays in the ball); eps (N, 1, 1, 1)."""
        raise NotImplementedError

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        """The unit steepest-ascent direction (N, C, H, W) of `grad` for this norm's ball."""
        raise NotImplementedError

    def shrink(self, v: torch.Tensor, eps: float) -> torch.Tensor:
        """One perturbation `v` (any shape, the whole tensor measured at once, e.g. a universal
        perturbation (C, H, W)) onto the eps-ball around 0: exact, and a no-op inside the ball."""
        raise NotImplementedError

    def check_eps(self, eps: object) -> float:
        """A positive finite budget; ValueError naming the problem otherwise."""
        if not is_real(eps) or not 0 < eps < math.inf:  # type: ignore[operator]
            raise ValueError(f"eps must be a positive number for norm {self.name}, got {eps!r}")
        return float(eps)  # type: ignore[arg-type]


class Linf(Norm):
    """l_inf: the largest change of any pixel value."""

    name = "linf"

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).abs().amax(dim=1)

    def project(self, x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(x, x0 - eps), x0 + eps).clamp(0.0, 1.0)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        return grad.sign()

    def shrink(self, v: torch.Tensor, eps: float) -> torch.Tensor:
        return v.clamp(-eps, eps)

    def check_eps(self, eps: object) -> float:
        """eps in (0, 1]: pixels are in [0, 1]."""
        if not is_real(eps) or not 0 < eps <= 1:  # type: ignore[operator]
            raise ValueError(f"eps must be a number in (0, 1] for norm linf (pixels in [0, 1]), got {eps!r}")
        return float(eps)  # type: ignore[arg-type]


class L2(Norm):
    """l2: the Euclidean length of the perturbation (usual budgets exceed 1: the l2 diameter of
    [0, 1]^D is sqrt(D), e.g. eps 3.0 on ImageNet)."""

    name = "l2"

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).norm(dim=1)

    def project(self, x: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        delta = x - x0
        length = delta.flatten(1).norm(dim=1).view_as(eps)
        return (x0 + delta * (eps / length.clamp_min(1e-12)).clamp(max=1.0)).clamp(0.0, 1.0)

    def steepest(self, grad: torch.Tensor) -> torch.Tensor:
        return grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))

    def shrink(self, v: torch.Tensor, eps: float) -> torch.Tensor:
        return v * (eps / v.norm().clamp_min(eps))  # no host sync


class MSE(Measure):
    """The mean squared difference per pixel value."""

    name = "mse"

    def size(self, delta: torch.Tensor) -> torch.Tensor:
        return delta.flatten(1).pow(2).mean(dim=1)


NORMS: dict[str, Norm] = {n.name: n for n in (Linf(), L2())}
MEASURES: dict[str, Measure] = {"l2": NORMS["l2"], "linf": NORMS["linf"], "mse": MSE()}  # every row reports these


def get_norm(name: str) -> Norm:
    """The norm called `name`; ValueError naming the choices otherwise."""
    if name not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {name!r}")
    return NORMS[name]
