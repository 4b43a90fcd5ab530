"""APGD and APGD-T: Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020; reference code fra31/auto-attack), the
gradient components of AutoAttack.

PGD with what makes it reliable: a step size that starts at 2 eps and is halved at checkpoints
(p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) of the iterations) when fewer
than rho = 75% of the steps since the last checkpoint raised the loss, or when the best loss did not
improve since then (and the step was not just halved); each halving restarts from the best point
found. Momentum 0.75 on the step. Losses: cross-entropy, or the Difference of Logits Ratio

    DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)

(pi: the classes by decreasing logit), invariant to a shift and a rescaling of the logits, which
is what defeats the false robustness of cross-entropy on saturated or rescaled logits. APGD-T runs the
targeted DLR, -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2), against the 2nd, 3rd, ... most likely
classes of the clean image in turn, each only on the images still robust. A model with too few classes
for a normaliser (2 for DLR, 3 for targeted DLR: e.g. the binarized models of the binarization test) gets
the plain logit difference z_y - z_t, the loss Zimmermann et al. (NeurIPS 2022) attack those models with.

Batched like every attack here: each image has its own step size and schedule state; its random
start is keyed by the seed and its own pixels (`advlab.core.rng`), so an image gives the same result alone
or in any batch. Images found adversarial leave the batch every `compact_every` iterations (their first
adversarial point is kept), which changes no other image's path.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from advlab.core.attack import Attack, AttackResult
from advlab.core.checks import check_choice, is_real, positive_int
from advlab.core.criteria import Criterion, Targeted
from advlab.core.norms import NORMS, get_norm
from advlab.core.registry import register_attack
from advlab.core.rng import image_keys, normal, step_keys, uniform

APGD_LOSSES = ("ce", "dlr")
_START_STREAM = 51  # advlab.core.rng stream of APGD's random starts (step = restart index)
Objective = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (A, K), index (A,)) -> (A,) to ascend


# ---------------------------------------------------------------- losses
def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, K) logits, (N,) labels -> (N,) untargeted DLR loss (to ascend; > 0 once misclassified)."""
    top = logits.sort(dim=1, descending=True).values  # (N, K)
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], -math.inf).amax(dim=1)
    scale = top[:, 0] - top[:, 2] + 1e-12 if top.shape[1] >= 3 else 1.0  # two classes: the logit difference
    return -(own - other) / scale


def dlr_targeted_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(N, K) logits, (N,) true labels, (N,) targets -> (N,) targeted DLR loss (to ascend)."""
    top = logits.sort(dim=1, descending=True).values  # (N, K)
    own = logits.gather(1, labels[:, None]).squeeze(1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    classes = top.shape[1]
    scale = (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + 1e-12 if classes >= 4 else
             top[:, 0] - top[:, 2] + 1e-12 if classes == 3 else 1.0)  # fewer classes: the nearest normaliser
    return -(own - target) / scale


# ---------------------------------------------------------------- the step-size schedule
@dataclass(frozen=True)
class Schedule:
    """The checkpoint lengths of the reference code: the first after 22% of the iterations, each next one
    3% shorter, never below 6% (integers, at least 1)."""

    first: int
    shrink: int
    shortest: int

    @classmethod
    def of(cls, steps: int) -> Schedule:
        return cls(max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1))


def _start(x0: torch.Tensor, keys: torch.Tensor, norm: str, eps: torch.Tensor) -> torch.Tensor:
    """A random point on the eps-sphere's surface scale (the reference's start), clamped to [0, 1]:
    l_inf: uniform noise scaled to l_inf norm eps; l2: Gaussian noise scaled to l2 norm eps."""
    d = x0[0].numel()
    if norm == "linf":
        t = uniform(keys, (d,)) * 2.0 - 1.0  # (N, D)
        t = t / t.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    else:
        t = normal(keys, (d,))
        t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (x0 + eps * t.view_as(x0)).clamp(0.0, 1.0)


# ---------------------------------------------------------------- the core loop
def apgd(model: nn.Module, x: torch.Tensor, objective: Objective, fooled: Callable[[torch.Tensor, torch.Tensor],
         torch.Tensor], *, norm: str, eps: float, steps: int, keys: torch.Tensor, rho: float = 0.75,
         eot_samples: int = 1, compact_every: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One APGD run (Croce & Hein 2020, Alg. 1) on images x (N, C, H, W) in [0, 1].

    objective(logits, index) -> (A,) the loss to ascend for the images `index` (A,) of the batch;
    fooled(logits, index) -> (A,) bool. keys (N,): the images' random-start keys.
    With `eot_samples` > 1 (a randomised model) no image leaves early and each returns its point of highest
    expected loss, as the reference keeps ascending after a success: one lucky draw is not an adversarial.
    Returns (x_adv (N, C, H, W): each image's first adversarial point, else its best-loss point;
    success (N,) bool; queries (N,) int64: forward-backward passes spent on the image)."""
    n, device, ball = x.shape[0], x.device, get_norm(norm)
    x0 = x.detach().float()
    view = (-1,) + (1,) * (x.dim() - 1)
    success = torch.zeros(n, dtype=torch.bool, device=device)
    queries = torch.zeros(n, dtype=torch.long, device=device)
    live = torch.arange(n, device=device)  # (A,) images still in the batch
    eps_t = torch.full((n,) + (1,) * (x.dim() - 1), float(eps), device=device)  # (N, 1, 1, 1)

    def gradient(point: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gradient, loss, logits) at `point`, each averaged over the EOT passes: a randomised model's
        verdict is that of its expected logits, not of one lucky draw."""
        point = point.detach().requires_grad_(True)
        grad = torch.zeros_like(point)
        loss_sum, logits_sum = 0.0, 0.0
        for _ in range(eot_samples):
            with torch.enable_grad():
                logits = model(point.to(x.dtype)).float()  # (A, K)
                loss = objective(logits, index)  # (A,)
                grad += torch.autograd.grad(loss.sum(), point)[0]  # each image's own gradient
            loss_sum, logits_sum = loss_sum + loss.detach(), logits_sum + logits.detach()
        queries[index] += eot_samples
        return grad / eot_samples, loss_sum / eot_samples, logits_sum / eot_samples

    x_adv = _start(x0, keys, norm, eps_t)
    grad, loss, logits = gradient(x_adv, live)
    success |= fooled(logits, live)
    out = x_adv.clone()  # (N, C, H, W) filled from the batch state when images leave it and at the end
    schedule = Schedule.of(steps)
    state = {  # per image still in the batch (A, ...), compacted together
        "x0": x0, "eps": eps_t, "x_adv": x_adv, "x_old": x_adv.clone(), "grad": grad, "x_best": x_adv.clone(),
        "grad_best": grad.clone(), "loss_best": loss.clone(), "loss_prev": loss.clone(), "step": 2.0 * eps_t,
        "increases": torch.zeros(n, device=device), "best_at_check": loss.clone(),
        "halved": torch.ones(n, dtype=torch.bool, device=device),  # the reference starts as if just halved
        "x_first": x_adv.clone(),  # the first adversarial point (the start where that was one already)
    }
    length, since = schedule.first, 0
    for i in range(steps):
        s = state
        momentum = 0.75 if i > 0 else 1.0
        with torch.no_grad():
            z = ball.project(s["x_adv"] + s["step"] * ball.steepest(s["grad"]), s["x0"], s["eps"])
            new = ball.project(s["x_adv"] + momentum * (z - s["x_adv"]) + (1 - momentum) * (s["x_adv"] - s["x_old"]),
                               s["x0"], s["eps"])
        s["x_old"], s["x_adv"] = s["x_adv"], new
        grad, loss, logits = gradient(new, live)
        s["grad"] = grad
        with torch.no_grad():
            now = fooled(logits, live) & ~success[live]
            s["x_first"] = torch.where(now.view(view), new, s["x_first"])
            success[live] |= now
            better = loss > s["loss_best"]  # (A,)
            s["x_best"] = torch.where(better.view(view), new, s["x_best"])
            s["grad_best"] = torch.where(better.view(view), grad, s["grad_best"])
            s["loss_best"] = torch.where(better, loss, s["loss_best"])
            s["increases"] += (loss > s["loss_prev"]).float()
            s["loss_prev"] = loss
            since += 1
            if since == length:  # a checkpoint: halve where progress stalled, from the best point
                stalled = s["increases"] <= length * rho
                stalled |= ~s["halved"] & (s["best_at_check"] >= s["loss_best"])
                s["halved"], s["best_at_check"] = stalled, s["loss_best"].clone()
                s["step"] = torch.where(stalled.view(view), s["step"] / 2, s["step"])
                s["x_adv"] = torch.where(stalled.view(view), s["x_best"], s["x_adv"])
                s["grad"] = torch.where(stalled.view(view), s["grad_best"], s["grad"])
                s["increases"].zero_()
                length, since = max(length - schedule.shrink, schedule.shortest), 0
            if (i + 1) % compact_every == 0 and i + 1 < steps and eot_samples == 1:
                keep = ~success[live]
                if not bool(keep.all()):
                    out[live[~keep]] = s["x_first"][~keep]  # leaving the batch: their first adversarial point
                    live = live[keep]
                    state = {k: v[keep] for k, v in s.items()}
                    if live.numel() == 0:
                        break
    if live.numel() > 0:  # the rest: the first adversarial point, or the best-loss point of an image never fooled
        out[live] = torch.where(success[live].view(view), state["x_first"], state["x_best"])
        if eot_samples > 1:  # a randomised model: the point of highest expected loss, not a lucky first success
            out[live] = state["x_best"]
    return out.to(x.dtype), success, queries


# ---------------------------------------------------------------- plugins
def _check_common(eps: float, norm: str, steps: int, restarts: int, rho: float, eot_samples: int,
                  compact_every: int) -> tuple[str, float, int, int, float, int, int]:
    norm = check_choice("norm", norm, tuple(NORMS))
    if not is_real(rho) or not 0 < rho < 1:
        raise ValueError(f"rho must be a share in (0, 1) (the paper's 0.75), got {rho!r}")
    return (norm, NORMS[norm].check_eps(eps), positive_int("steps", steps), positive_int("restarts", restarts), float(rho),
            positive_int("eot_samples", eot_samples), positive_int("compact_every", compact_every))


@register_attack("apgd", threat="white-box", tasks={"classification"})
class APGD(Attack):
    """APGD (Croce & Hein, ICML 2020): PGD with a self-tuning step size and momentum, CE or DLR loss, l_inf or l2."""

    quick_settings: ClassVar[dict[str, Any]] = {"eps": 0.3, "steps": 20}

    norm = "linf"  # the default of the `norm` setting; each instance overrides it with its own

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, loss: str = "ce",
                 restarts: int = 1, rho: float = 0.75, eot_samples: int = 1, compact_every: int = 10) -> None:
        (self.norm, self.eps, self.steps, self.restarts, self.rho, self.eot_samples,  # type: ignore[misc]
         self.compact_every) = _check_common(eps, norm, steps, restarts, rho, eot_samples, compact_every)
        self.loss = check_choice("loss", loss, APGD_LOSSES)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, seed: int,
            starting_points: torch.Tensor | None) -> AttackResult:
        labels = criterion.labels

        def objective(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            part = criterion.subset(index)
            if self.loss == "ce":
                return part.loss(logits)
            if isinstance(criterion, Targeted):  # toward the target, away from the best other class
                other = logits.scatter(1, labels[index, None], -math.inf).argmax(dim=1)
                return dlr_targeted_loss(logits, other, labels[index])
            return dlr_loss(logits, labels[index])

        def fooled(logits: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
            return criterion.subset(index).is_adversarial(logits)

        return _restarts(self, model, x, objective, fooled, seed)


@register_attack("apgd-t", threat="white-box", tasks={"classification"})
class APGDT(Attack):
    """APGD-T (Croce & Hein, ICML 2020): targeted DLR against the clean image's next most likely classes in turn."""

    quick_settings: ClassVar[dict[str, Any]] = {"eps": 0.3, "steps": 10, "targets": 3}

    norm = "linf"

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, targets: int = 9,
                 restarts: int = 1, rho: float = 0.75, eot_samples: int = 1, compact_every: int = 10) -> None:
        (self.norm, self.eps, self.steps, self.restarts, self.rho, self.eot_samples,  # type: ignore[misc]
         self.compact_every) = _check_common(eps, norm, steps, restarts, rho, eot_samples, compact_every)
        self.targets = positive_int("targets", targets)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, seed: int,
            starting_points: torch.Tensor | None) -> AttackResult:
        if isinstance(criterion, Targeted):
            raise ValueError("apgd-t chooses its own targets; for a given target class use apgd with loss: dlr")
        with torch.no_grad():
            ranked = model(x).float().argsort(dim=1, descending=True)  # (N, K) clean logits' classes, best first
        classes = ranked.shape[1]
        labels = criterion.labels
        x_adv, success = x.detach().clone(), torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        queries = torch.ones(x.shape[0], dtype=torch.long, device=x.device)  # the clean pass ranking the classes
        for k in range(1, min(self.targets, classes - 1) + 1):  # the 2nd, 3rd, ... most likely class
            left = (~success).nonzero().squeeze(1)
            if left.numel() == 0:
                break
            target = ranked[left, k]

            def objective(logits: torch.Tensor, index: torch.Tensor, target: torch.Tensor = target,
                          left: torch.Tensor = left) -> torch.Tensor:
                return dlr_targeted_loss(logits, labels[left][index], target[index])

            def fooled(logits: torch.Tensor, index: torch.Tensor, left: torch.Tensor = left) -> torch.Tensor:
                return criterion.subset(left[index]).is_adversarial(logits)

            result = _restarts(self, model, x[left], objective, fooled, seed, stream_offset=k * self.restarts)
            x_adv[left] = torch.where(result.success.view(-1, 1, 1, 1), result.x_adv, x_adv[left])
            success[left] |= result.success
            queries[left] += result.queries
        return AttackResult(x_adv=x_adv, success=success, queries=queries,
                            distance=torch.zeros(x.shape[0], device=x.device))


def _restarts(attack: APGD | APGDT, model: nn.Module, x: torch.Tensor, objective: Objective,
              fooled: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], seed: int,
              stream_offset: int = 0) -> AttackResult:
    """`attack.restarts` APGD runs, each on the images the earlier ones left robust, from its own start."""
    n = x.shape[0]
    keys = image_keys(x, seed)  # (N,)
    x_adv, success = x.detach().clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
    queries = torch.zeros(n, dtype=torch.long, device=x.device)
    for r in range(attack.restarts):
        left = (~success).nonzero().squeeze(1)
        if left.numel() == 0:
            break

        def objective_left(logits: torch.Tensor, index: torch.Tensor, left: torch.Tensor = left) -> torch.Tensor:
            return objective(logits, left[index])

        def fooled_left(logits: torch.Tensor, index: torch.Tensor, left: torch.Tensor = left) -> torch.Tensor:
            return fooled(logits, left[index])

        adv, won, spent = apgd(model, x[left], objective_left, fooled_left, norm=attack.norm, eps=attack.eps,
                               steps=attack.steps, keys=step_keys(keys[left], _START_STREAM, stream_offset + r),
                               rho=attack.rho, eot_samples=attack.eot_samples, compact_every=attack.compact_every)
        keep = won | (r == 0)  # the first run's best-loss point stands in for an image never fooled
        x_adv[left] = torch.where(keep.view(-1, 1, 1, 1), adv, x_adv[left])
        success[left] |= won
        queries[left] += spent
    return AttackResult(x_adv=x_adv, success=success, queries=queries, distance=torch.zeros(n, device=x.device))


__all__ = ["APGD", "APGDT", "apgd", "dlr_loss", "dlr_targeted_loss"]
