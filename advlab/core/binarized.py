"""Binarized models: the construction of the binarization test of Zimmermann, Brendel, Tramèr & Carlini,
"Increasing Confidence in Adversarial Robustness Evaluations", NeurIPS 2022 (section 4, Algorithm 1).

For an image x, the model's classification head is replaced by a linear readout on the features that enter
it, fitted so that x and `inner` points drawn within eta * eps of it (eta = 0.95) are class 0 and one point
at distance eps (a corner of the l_inf ball, a point on the l2 sphere) is class 1. Where the readout puts
every one of these points on its side, an adversarial example of the binarized model exists inside the
threat model by construction; an attack that does not find it is too weak for the model it was run
against, whatever robust accuracy it reports.

One `Binarized` module holds the readouts of many images and reads an input out with the readout of the
image nearest to it in the threat's norm, so the binarized models of a batch are attacked as one batch
(`separated` keeps images more than 2 eps apart: inside an image's ball its own readout is always the one
used). Every draw is keyed by the seed and the image's own pixels (`advlab.core.rng`): the same image gets
the same binarized model in any batch.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from advlab.core.errors import AdvlabError
from advlab.core.rng import image_keys, normal, step_keys, uniform
from advlab.core.threat import ThreatModel
from advlab.core.wrapping import Wrapping

ETA = 0.95  # inner points lie within eta * eps (the reference's relative inner-boundary gap of 0.05)
INNER_POINTS = 999  # the reference's inner points per image (the clean image included), capped by `inner_count`
READOUT_STEPS = 500  # Adam steps of the logistic readouts (fixed: an image's readout never waits for another's)
_STREAM = 71  # advlab.core.rng stream of the test's draws: step 2 the boundary point, _FIRST_POINT + k inner point k
_FIRST_POINT = 16
_ANCHOR_ELEMENTS = 1 << 24  # (B, anchors, D) elements compared at once when an input looks for its image


def head_of(classifier: nn.Module, classes: int) -> nn.Linear:
    """The classification head: the model's last `nn.Linear` with one output per class."""
    heads = [m for m in classifier.modules() if isinstance(m, nn.Linear) and m.out_features == classes]
    if not heads:
        raise AdvlabError(f"the binarization test replaces a classifier's head, a linear layer with {classes} outputs, "
                          f"and {getattr(classifier, 'name', 'the model')} ({getattr(classifier, 'task', 'unknown')} "
                          f"task) has none; run it on a classifier whose logits come from a linear layer, or leave "
                          f"--binarization-test off")
    return heads[-1]


@contextlib.contextmanager
def tapped(head: nn.Linear) -> Iterator[dict[str, torch.Tensor]]:
    """While open, `found["features"]` (B, D) and `found["logits"]` (B, K) of the head's last call."""
    found: dict[str, torch.Tensor] = {}

    def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        found["features"], found["logits"] = inputs[0], output

    handle = head.register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()


def check_head(model: nn.Module, head: nn.Linear, x: torch.Tensor) -> None:
    """The head's outputs must be the model's logits (N, K), so that replacing it replaces the model's decision."""
    with torch.no_grad(), tapped(head) as found:
        out = model(x)
    logits = found.get("logits")
    same = (isinstance(out, torch.Tensor) and out.dim() == 2 and logits is not None and logits.shape == out.shape
            and torch.allclose(logits.float(), out.float(), atol=1e-4, rtol=1e-4))
    if not same:
        raise AdvlabError(f"the binarization test replaces a classifier's head, and the outputs of "
                          f"{getattr(model, 'name', 'the model')} ({getattr(model, 'task', 'unknown')} task) are not "
                          f"the logits of its last linear layer {head}; run the test on a classifier whose logits come "
                          f"straight from its last linear layer, or leave --binarization-test off")


def inner_count(features: int, wanted: int = INNER_POINTS) -> int:
    """Inner points per image (the clean image included): the reference's 999, fewer than the feature
    dimension so that a linear readout can separate one point from them (the reference warns where it is not)."""
    return max(1, min(wanted, features - 2))


def inner_points(x: torch.Tensor, keys: torch.Tensor, index: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """(B, C, H, W) images, their (B,) keys and (B,) point indices -> (B, C, H, W) points drawn uniformly in
    the eta * eps ball (index 0: the clean image itself), clamped to [0, 1]."""
    point_keys = step_keys(keys, _STREAM, _FIRST_POINT + index)  # one stream per (image, point)
    shape = tuple(x.shape[1:])
    radius = ETA * threat.eps
    if threat.norm == "linf":
        delta = (2 * uniform(point_keys, shape) - 1) * radius
    else:  # uniform in the l2 ball: a random direction, radius r * U^(1/d)
        direction = normal(point_keys, shape)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * len(shape))
        scale = uniform(step_keys(point_keys, _STREAM, 1), (1,)).squeeze(1) ** (1.0 / x[0].numel())
        delta = direction * (radius * scale).view(-1, *[1] * len(shape))
    delta = torch.where((index == 0).view(-1, *[1] * len(shape)), torch.zeros_like(delta), delta)
    return (x + delta.to(x.device)).clamp(0, 1)  # clamping never moves a point away from x


def boundary_point(x: torch.Tensor, keys: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """(n, C, H, W) -> (n, C, H, W) one point per image at distance eps (up to the [0, 1] box): a random
    corner of the l_inf ball; on the l2 sphere, a random direction scaled after clamping to reach eps."""
    shape = tuple(x.shape[1:])
    point_keys = step_keys(keys, _STREAM, 2)
    if threat.norm == "linf":
        sign = torch.where(uniform(point_keys, shape) < 0.5, -1.0, 1.0).to(x.device)
        return (x + threat.eps * sign).clamp(0, 1)
    direction = normal(point_keys, shape).to(x.device)
    direction = direction / direction.flatten(1).norm(dim=1).view(-1, *[1] * len(shape))
    low = torch.full((x.shape[0],), threat.eps, device=x.device)  # the scale whose clamped point is eps away
    high = low * 64
    for _ in range(40):  # bisection: the clamped distance grows with the scale
        mid = (low + high) / 2
        reach = ((x + direction * mid.view(-1, *[1] * len(shape))).clamp(0, 1) - x).flatten(1).norm(dim=1)
        low, high = torch.where(reach < threat.eps, mid, low), torch.where(reach < threat.eps, high, mid)
    return (x + direction * low.view(-1, *[1] * len(shape))).clamp(0, 1)


def features_of(model: nn.Module, head: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, D) float features entering the head."""
    with torch.no_grad(), tapped(head) as found:
        model(x)
    return found["features"].float().flatten(1)


@dataclass(frozen=True)
class Readouts:
    """Per image a linear readout s(f) = f . weight + bias on the head's features: class 1 where s > 0."""

    weight: torch.Tensor  # (n, D)
    bias: torch.Tensor  # (n,)
    valid: torch.Tensor  # (n,) bool: every training point on its side


def fit_readouts(inner: torch.Tensor, boundary: torch.Tensor, steps: int = READOUT_STEPS) -> Readouts:
    """(n, P, D) inner features (class 0) and (n, D) boundary features (class 1) -> balanced logistic
    regressions, one per image (Adam on standardised features, as the reference's sklearn fit without
    penalty), rescaled so that their outputs on the training points span 1 (the reference's "fixed" logit
    rescaling: no attack gains from a huge readout scale or loses to saturated softmax)."""
    mean = inner.mean(dim=1)  # (n, D)
    scale = (inner - mean[:, None]).pow(2).mean(dim=(1, 2)).sqrt().clamp_min(1e-12)  # (n,)
    zi = (inner - mean[:, None]) / scale[:, None, None]  # (n, P, D)
    zb = (boundary - mean) / scale[:, None]  # (n, D)
    weight = torch.zeros_like(zb, requires_grad=True)
    bias = torch.zeros(zb.shape[0], device=zb.device, requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=0.05)
    with torch.enable_grad():
        for _ in range(steps):
            si = torch.einsum("npd,nd->np", zi, weight) + bias[:, None]  # (n, P)
            sb = (zb * weight).sum(dim=1) + bias  # (n,)
            loss = (nn.functional.softplus(si).mean(dim=1) + nn.functional.softplus(-sb)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        si = torch.einsum("npd,nd->np", zi, weight) + bias[:, None]
        sb = (zb * weight).sum(dim=1) + bias
        valid = (si < 0).all(dim=1) & (sb > 0)
        span = (torch.maximum(si.amax(dim=1), sb) - torch.minimum(si.amin(dim=1), sb)).clamp_min(1e-12)  # (n,)
        w = weight / (scale * span)[:, None]  # in the features' own units: s(f) = f . w + b
        b = bias / span - (mean * w).sum(dim=1)
    return Readouts(w.detach(), b.detach(), valid)


class Binarized(Wrapping):
    """The binarized models of `anchors` (n, C, H, W): `model` with its head replaced, per anchor, by that
    anchor's readout; an input is read out by its nearest anchor (threat norm). Two logits, (-s/2, s/2):
    class 1 (the boundary class) where the readout is positive."""

    def __init__(self, model: nn.Module, head: nn.Linear, anchors: torch.Tensor, readouts: Readouts,
                 norm: str) -> None:
        super().__init__()
        self.model, self.head, self.norm = model, head, norm
        self.register_buffer("anchors", anchors.flatten(1))  # (n, D_in)
        self.register_buffer("weight", readouts.weight)  # (n, D)
        self.register_buffer("bias", readouts.bias)  # (n,)

    # the attributes attacks read from an ImageClassifier
    class_names: ClassVar[list[str]] = ["inside", "at eps"]
    num_classes = 2

    @property
    def name(self) -> str:
        return f"{getattr(self.model, 'name', 'model')} (binarized)"

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B,) the index of each input's nearest anchor."""
        flat = x.detach().flatten(1).float()
        anchors = self.anchors.to(flat.device)
        block = max(1, _ANCHOR_ELEMENTS // max(1, flat.numel()))
        parts = [pairwise(flat, anchors[k:k + block], self.norm) for k in range(0, anchors.shape[0], block)]
        return torch.cat(parts, dim=1).argmin(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, 2)
        own = self.nearest(x)
        with tapped(self.head) as found:
            self.model(x)
        features = found["features"].float().flatten(1)  # (B, D), with the model's gradient
        s = (features * self.weight[own]).sum(dim=1) + self.bias[own]  # (B,)
        return torch.stack([-s / 2, s / 2], dim=1)


def pairwise(a: torch.Tensor, b: torch.Tensor, norm: str) -> torch.Tensor:
    """(A, D) and (B, D) flat images -> (A, B) distances in `norm` ("linf" or "l2")."""
    if norm == "linf":
        return (a[:, None, :] - b[None, :, :]).abs().amax(dim=2)
    return torch.cdist(a, b)


def separated(x: torch.Tensor, threat: ThreatModel, wanted: int) -> torch.Tensor:
    """(M, C, H, W) candidates -> indices of the first `wanted` of them, in order, that lie more than 2 eps
    from every one taken before (so that the eps balls of the test's images are disjoint)."""
    flat = x.flatten(1).float()
    taken: list[int] = []
    for i in range(flat.shape[0]):  # M is a few times `wanted`: a host loop over candidates, not over steps
        if len(taken) == wanted:
            break
        if taken:
            gap = pairwise(flat[i:i + 1], flat[taken], threat.norm)
            if bool((gap <= 2 * threat.eps).any()):
                continue
        taken.append(i)
    return torch.tensor(taken, dtype=torch.long)


def binarize(model: nn.Module, head: nn.Linear, x: torch.Tensor, threat: ThreatModel, *, seed: int,
             inner: int, batch_size: int) -> tuple[Binarized, torch.Tensor]:
    """The binarized models of images x (n, C, H, W) on x's device: (the module over the valid ones, (n,)
    bool valid). Valid: the readout separates all its training points, and the binarized model itself (the
    full forward, defense included) calls the clean image class 0 and the boundary point class 1."""
    if threat.norm not in ("linf", "l2"):
        raise AdvlabError(f"the binarization test draws points in l_inf and l2 balls, not {threat.norm}")
    keys = image_keys(x, seed)  # (n,)
    n = x.shape[0]
    pairs = torch.arange(n * inner, device=x.device)  # every (image, inner point), batch by batch
    parts = []
    for block in pairs.split(batch_size):
        image, point = block // inner, block % inner
        parts.append(features_of(model, head, inner_points(x[image], keys[image], point, threat)))
    inner_features = torch.cat(parts).view(n, inner, -1)  # (n, P, D)
    edge = boundary_point(x, keys, threat)  # (n, C, H, W)
    edge_features = torch.cat([features_of(model, head, b) for b in edge.split(batch_size)])  # (n, D)
    readouts = fit_readouts(inner_features, edge_features)
    binarized = Binarized(model, head, x, readouts, threat.norm).eval()
    with torch.no_grad():
        clean_side = torch.cat([binarized(b).argmax(dim=1) for b in x.split(batch_size)])
        edge_side = torch.cat([binarized(b).argmax(dim=1) for b in edge.split(batch_size)])
    valid = readouts.valid & (clean_side == 0) & (edge_side == 1)
    kept = valid.nonzero().squeeze(1)
    subset = Readouts(readouts.weight[kept], readouts.bias[kept], readouts.valid[kept])
    return Binarized(model, head, x[kept], subset, threat.norm).eval(), valid


__all__ = ["ETA", "INNER_POINTS", "Binarized", "Readouts", "binarize", "boundary_point", "check_head", "fit_readouts",
           "head_of", "inner_count", "inner_points", "separated"]
