"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, "Minimally distorted adversarial examples
with a fast adaptive boundary attack", ICML 2020), the third component of AutoAttack's standard version.

For a target class t, FAB linearises the decision boundary f(z) = z_t(z) - z_y(z) = 0 at the current iterate
x_k: the hyperplane {z : w'z = b}, w = grad f(x_k), b = w'x_k - f(x_k). It projects both x_k and the clean
image x_0 onto that hyperplane inside the box [0, 1]^D (the minimal-norm step that reaches it, in the attack's
norm), and steps to a convex combination biased towards the clean image,

    x_{k+1} = clip((1 - a)(x_k + eta d_k) + a (x_0 + eta d_0)),  a = min(|d_k| / (|d_k| + |d_0|), alpha_max),

with an overshoot eta; whenever x_{k+1} is adversarial it is kept if closer than the best so far, and the
iterate steps back towards x_0 (x_0 + beta (x_{k+1} - x_0)), so the search keeps shrinking the perturbation.
FAB-T runs this against the clean image's 2nd, 3rd, ... most likely class in turn, each only on the images
still robust. As AutoAttack counts it, an image is fooled where the smallest adversarial found lies within
eps: the attack returns that point, or the clean image where none is within eps, so its `bound` holds.

Batched on the device: one forward-backward pass per iteration (its logits are also the previous step's
adversarial check, the reference's separate forward pass), plus one for the images that just stepped back;
an image leaves the batch once it has an adversarial within eps. Random restarts (after the first, which
starts at x_0) are keyed per image (`advlab.core.rng`).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from advlab.core.attack import Attack, AttackResult
from advlab.core.checks import check_choice, is_real, positive_int
from advlab.core.criteria import Criterion, Targeted
from advlab.core.norms import NORMS, get_norm
from advlab.core.registry import register_attack
from advlab.core.rng import image_keys, normal, step_keys, uniform
from advlab.core.threat import ThreatModel

FAB_NORMS = ("linf", "l2")
_RESTART_STREAM = 71  # advlab.core.rng stream of FAB's random restarts (step = target * restarts + restart)


def project_onto_hyperplane(p: torch.Tensor, w: torch.Tensor, delta: torch.Tensor, norm: str) -> torch.Tensor:
    """The minimal-norm step d (N, D) with w'd = delta inside the box, p + d in [0, 1]^D, for points p (N, D),
    normals w (N, D) and offsets delta (N,) (the hyperplane is w'z = w'p + delta); where the box does not reach
    the hyperplane, the step that gets closest (every coordinate moved to its bound).

    Every coordinate moves in the direction s_i = sign(delta w_i), at most its room c_i to the bound there, by
    m_i(lam) = min(lam k_i, c_i) with k_i = 1 (l_inf: the smallest common size lam) or k_i = |w_i| (l2: the
    KKT point d = lam w clipped to the box). The progress h(lam) = sum |w_i| m_i(lam) is piecewise linear and
    non-decreasing with breakpoints r_i = c_i / k_i: sorting them, the segment where h reaches |delta| is found
    by a search over the cumulative sums, and lam on it in closed form (the FAB paper's Props. 2 and 3)."""
    direction = torch.sign(delta)[:, None] * torch.sign(w)  # (N, D) in {-1, 0, 1}
    room = torch.where(direction > 0, 1.0 - p, p).clamp_min(0.0)  # (N, D) how far each coordinate can go
    weight = w.abs()  # (N, D) progress per unit move
    scale = torch.ones_like(weight) if norm == "linf" else weight  # (N, D) k_i
    breaks = torch.where(scale > 0, room / scale.clamp_min(1e-30), torch.full_like(room, float("inf")))
    order = breaks.argsort(dim=1)  # (N, D)
    r = breaks.gather(1, order)
    full = (weight * room).gather(1, order)  # progress of a coordinate moved to its bound
    slope = (weight * scale).gather(1, order)  # its progress per unit lam before that
    done_before = torch.cumsum(full, dim=1) - full  # (N, D) progress of the coordinates that saturate earlier
    slope_after = slope.flip(1).cumsum(1).flip(1)  # (N, D) slope of those not yet saturated, from k on
    finite_r = torch.where(torch.isinf(r), torch.zeros_like(r), r)
    at_break = done_before + full + finite_r * (slope_after - slope)  # h(r_k), (N, D), non-decreasing
    need = delta.abs()[:, None]  # (N, 1)
    k = torch.searchsorted(at_break.contiguous(), need.contiguous()).clamp_max(r.shape[1] - 1)  # (N, 1)
    lam = (need - done_before.gather(1, k)) / slope_after.gather(1, k).clamp_min(1e-30)  # (N, 1)
    reachable = at_break[:, -1:] >= need  # (N, 1) False: move everything to its bound
    lam = torch.where(reachable, lam.clamp_min(0.0), torch.full_like(lam, float("inf")))
    move = torch.where(scale > 0, lam * scale, torch.zeros_like(scale))  # (N, D); inf where unreachable
    return direction * torch.minimum(move, room)


def _restart_start(x0: torch.Tensor, keys: torch.Tensor, norm: str, radius: torch.Tensor) -> torch.Tensor:
    """A random point at half `radius` (N,) from x0 (N, D) in the norm (the reference's restart), in [0, 1]."""
    d = x0.shape[1]
    if norm == "linf":
        t = uniform(keys, (d,)) * 2.0 - 1.0
        t = t / t.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    else:
        t = normal(keys, (d,))
        t = t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return (x0 + 0.5 * radius[:, None] * t).clamp(0.0, 1.0)


def fab_targeted(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, *, norm: str,
                 eps: float, steps: int, alpha_max: float, eta: float, beta: float,
                 start: torch.Tensor | None = None,
                 eot_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One FAB-T run towards `targets` (N,) for images x (N, C, H, W) of true `labels` (N,), from x itself or
    `start` (N, C, H, W). Returns (best (N, C, H, W): the smallest adversarial found, x where none; size (N,):
    its distance, inf where none; queries (N,) int64: model passes spent on the image). An image stops once
    its best lies within eps.

    Each iterate is checked (is it adversarial?) and linearised (the gradient for the next step) at the
    point the search continues from: the iterate itself, or where it was adversarial, the point stepped back
    towards x_0. An image whose last iterate was not adversarial gets both from one forward-backward pass at
    the new iterate (a second one only where it turns out adversarial); an image whose last iterate was
    adversarial (it hovers beyond eps, the common case on robust models) is checked by a forward pass and then
    linearised once where it continues: the reference's two passes. With `eot_samples` > 1 (a randomised model)
    every check and linearisation averages that many passes (Expectation over Transformation)."""
    n, shape, ball, bounds = x.shape[0], x.shape, get_norm(norm), ThreatModel(norm, eps)
    x0 = x.detach().flatten(1).float()  # (N, D)
    best = x0.clone()
    size = torch.full((n,), float("inf"), device=x.device)
    queries = torch.zeros(n, dtype=torch.long, device=x.device)
    live = torch.arange(n, device=x.device)  # (A,) images still searching
    new = start.detach().flatten(1).float() if start is not None else x0.clone()  # (A, D) the iterate to check
    was_adversarial = torch.zeros(n, dtype=torch.bool, device=x.device)  # (A,) at the previous check

    def margin_and_gradient(z: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(f (B,) = z_t - z_y, its gradient (B, D), logits (B, K)) at points z (B, D) of the images `index`."""
        z = z.detach().requires_grad_(True)
        rows = torch.arange(len(index), device=x.device)
        f_sum, grad_sum, logits_sum = 0.0, torch.zeros_like(z), 0.0
        for _ in range(eot_samples):
            with torch.enable_grad():
                logits = model(z.view(-1, *shape[1:]).to(x.dtype)).float()  # (B, K)
                f = logits[rows, targets[index]] - logits[rows, labels[index]]  # (B,) > 0: the target beats the label
                grad_sum += torch.autograd.grad(f.sum(), z)[0]  # each image's own gradient
            f_sum, logits_sum = f_sum + f.detach(), logits_sum + logits.detach()
        queries[index] += eot_samples
        return f_sum / eot_samples, grad_sum / eot_samples, logits_sum / eot_samples

    def logits_at(z: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            queries[index] += eot_samples
            return sum(model(z.view(-1, *shape[1:]).to(x.dtype)).float() for _ in range(eot_samples)) / eot_samples

    f = torch.zeros(n, device=x.device)
    grad = torch.zeros_like(x0)
    for i in range(steps + 1):
        checked = was_adversarial  # these get a forward pass here, their gradient after the step back
        logits: torch.Tensor | None = None  # (A, K) at `new`
        if bool(checked.any()):
            part = logits_at(new[checked], live[checked])
            logits = part.new_zeros(len(live), part.shape[1])
            logits[checked] = part
        if bool((~checked).any()):
            f_new, grad_new, part = margin_and_gradient(new[~checked], live[~checked])
            logits = part.new_zeros(len(live), part.shape[1]) if logits is None else logits
            logits[~checked], f[~checked], grad[~checked] = part, f_new, grad_new
        assert logits is not None
        with torch.no_grad():
            adversarial = logits.argmax(1) != labels[live]  # the reference's check: any other class
            distance = ball.size(new - x0[live])
            closer = adversarial & (distance < size[live])
            best[live] = torch.where(closer[:, None], new, best[live])
            size[live] = torch.where(closer, distance, size[live])
            keep = ~bounds.within(size[live])  # an adversarial within eps ends the image's search
            if i == steps or not bool(keep.any()):
                break
            live, new, f, grad = live[keep], new[keep], f[keep], grad[keep]
            adversarial, checked = adversarial[keep], checked[keep]
            point = torch.where(adversarial[:, None], x0[live] + beta * (new - x0[live]), new)  # step back
        stale = checked | adversarial  # no gradient at `point` yet
        if bool(stale.any()):
            f[stale], grad[stale], _ = margin_and_gradient(point[stale], live[stale])
        with torch.no_grad():
            start_point = x0[live]
            delta = -f  # the hyperplane w'z = w'x_k - f(x_k): -f from x_k, -f - w'(x_0 - x_k) from x_0
            d_k = project_onto_hyperplane(point, grad, delta, norm)
            d_0 = project_onto_hyperplane(start_point, grad, delta - (grad * (start_point - point)).sum(1), norm)
            a_k, a_0 = ball.size(d_k).clamp_min(1e-8), ball.size(d_0).clamp_min(1e-8)
            alpha = (a_k / (a_k + a_0)).clamp(0.0, alpha_max)[:, None]
            new = ((point + eta * d_k) * (1 - alpha) + (start_point + eta * d_0) * alpha).clamp(0.0, 1.0)
        was_adversarial = adversarial
    return best.view(shape).to(x.dtype), size, queries


@register_attack("fab-t", threat="white-box", tasks={"classification"})
class FABT(Attack):
    """FAB-T (Croce & Hein, ICML 2020): the targeted fast adaptive boundary attack, against the next most likely
    classes in turn; an image counts where the smallest adversarial found lies within eps."""

    quick_settings: ClassVar[dict[str, Any]] = {"eps": 0.3, "steps": 10, "targets": 3}

    norm = "linf"  # the default of the `norm` setting; each instance overrides it with its own

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, targets: int = 9,
                 restarts: int = 1, alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
                 eot_samples: int = 1) -> None:
        self.norm = check_choice("norm", norm, FAB_NORMS)  # type: ignore[misc]  # instance overrides the ClassVar
        self.eps = NORMS[norm].check_eps(eps)
        self.steps = positive_int("steps", steps)
        self.targets = positive_int("targets", targets)
        self.restarts = positive_int("restarts", restarts)
        self.alpha_max = _share("alpha_max", alpha_max, "0.1")
        self.beta = _share("beta", beta, "0.9")
        if not is_real(eta) or not 1.0 <= eta < 2.0:
            raise ValueError(f"eta is the overshoot, at least 1 (the paper's 1.05), got {eta!r}")
        self.eta = float(eta)
        self.eot_samples = positive_int("eot_samples", eot_samples)  # passes averaged per step (randomised models)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, seed: int,
            starting_points: torch.Tensor | None) -> AttackResult:
        if isinstance(criterion, Targeted):
            raise ValueError("fab-t chooses its own targets (the next most likely classes); for a given target "
                             "class use apgd with loss: dlr")
        with torch.no_grad():
            ranked = model(x).float().argsort(dim=1, descending=True)  # (N, K) the clean image's classes
        classes = ranked.shape[1]
        labels, n = criterion.labels, x.shape[0]
        keys = image_keys(x, seed)
        x_adv, size = x.detach().clone(), torch.full((n,), float("inf"), device=x.device)
        queries = torch.ones(n, dtype=torch.long, device=x.device)  # the clean pass ranking the classes
        bounds = ThreatModel(self.norm, self.eps)
        for k in range(1, min(self.targets, classes - 1) + 1):  # the 2nd, 3rd, ... most likely class
            for r in range(self.restarts):
                left = (~bounds.within(size)).nonzero().squeeze(1)
                if left.numel() == 0:
                    break
                start = None
                if r > 0:  # a random start at half the smaller of the best size so far and eps
                    radius = size[left].clamp(max=self.eps)
                    start = _restart_start(x[left].flatten(1).float(),
                                           step_keys(keys[left], _RESTART_STREAM, k * self.restarts + r),
                                           self.norm, radius).view_as(x[left])
                best, found, spent = fab_targeted(model, x[left], labels[left], ranked[left, k], norm=self.norm,
                                                  eps=self.eps, steps=self.steps, alpha_max=self.alpha_max,
                                                  eta=self.eta, beta=self.beta, start=start,
                                                  eot_samples=self.eot_samples)
                closer = found < size[left]
                x_adv[left] = torch.where(closer.view(-1, *[1] * (x.dim() - 1)), best, x_adv[left])
                size[left] = torch.minimum(found, size[left])
                queries[left] += spent
        within = bounds.within(size)
        x_adv = torch.where(within.view(-1, *[1] * (x.dim() - 1)), x_adv, x)  # outside eps: not counted
        return AttackResult(x_adv=x_adv, success=within, queries=queries, distance=torch.zeros(n, device=x.device))


def _share(name: str, value: object, paper: str) -> float:
    if not is_real(value) or not 0 < value < 1:  # type: ignore[operator]
        raise ValueError(f"{name} must be in (0, 1) (the paper's {paper}), got {value!r}")
    return float(value)  # type: ignore[arg-type]


__all__ = ["FABT", "fab_targeted", "project_onto_hyperplane"]
