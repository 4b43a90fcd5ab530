"""Gradient (white-box) attacks: FGSM and PGD, batched, with per-image budgets inside.

- FGSM, the Fast Gradient Sign Method (Goodfellow, Shlens & Szegedy, "Explaining and Harnessing
  Adversarial Examples", ICLR 2015): one l_inf step of size eps along the sign of the input
  gradient of the loss.
- PGD, Projected Gradient Descent (Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning
  Models Resistant to Adversarial Attacks", ICLR 2018): from a random point in the eps-ball, repeat
  a steepest-ascent step (sign of the gradient for l_inf, the l2-normalised gradient for l2) and a
  projection back onto the ball and onto [0, 1]. Without the random start it is the Basic
  Iterative Method / I-FGSM (Kurakin, Goodfellow & Bengio, "Adversarial Examples in the Physical
  World", ICLR workshop 2017).

Losses come from the criterion, so the attacks run on any task whose criteria define them (per-pixel
for segmentation): "ce" (`criterion.loss`: cross-entropy, ascended for untargeted criteria, descended
on the target's for targeted ones) or "margin" (`criterion.margin_loss`: the logit margin of Carlini &
Wagner, S&P 2017, without the kappa clamp). `eot_samples` > 1 averages the gradient over that many
forward/backward passes per step, for randomised models and defenses (Expectation over
Transformation: Athalye, Engstrom, Ilyas & Kwok, ICML 2018); each pass counts as a query.

Everything is batched: every step sends the whole batch through the model once and takes gradients
with respect to the input only (`torch.autograd.grad`), so the model's parameters are never touched.
Each image has its own eps and step size (tensors (N,)) in the module-level `pgd_linf` / `pgd_l2`,
which the registered classes call with filled tensors (and which HGD-style training can call with
per-image budgets directly). Random starts are drawn per image on the images' device from the
counter-based streams of `advlab.core.rng`, keyed by the seed and the image's own pixels: an image gets
the same start alone or in any batch, and the global RNG is never used.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from advlab.core.attack import Attack, AttackResult
from advlab.core.checks import check_bool, check_choice, is_real, positive_int
from advlab.core.criteria import Criterion, Targeted, Untargeted
from advlab.core.norms import NORMS, get_norm
from advlab.core.registry import register_attack
from advlab.core.rng import image_keys, normal, step_keys, uniform

LOSSES = ("ce", "margin")
_START_STREAM = 11  # advlab.core.rng stream of PGD's random start


# ---------------------------------------------------------------- functional core
def pgd_linf(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor | float, steps: int,
             step_size: torch.Tensor | float, seed: int = 0, targeted: bool = False, *,
             random_start: bool = True, loss: str = "ce", early_stop: bool = False) -> torch.Tensor:
    """l_inf PGD with a budget per image. x (N, C, H, W) in [0, 1]; labels (N,) true classes
    (untargeted) or targets (`targeted=True`); eps, step_size (N,) tensors or floats. Returns x_adv
    (N, C, H, W) with |x_adv - x| <= eps per image, in [0, 1]. The random start of each image is
    keyed by `seed` and its own pixels."""
    return _pgd(model, x, _criterion(labels, targeted), eps, steps, step_size, norm="linf", seed=seed,
                random_start=random_start, loss=loss, early_stop=early_stop)[0]


def pgd_l2(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, eps: torch.Tensor | float, steps: int,
           step_size: torch.Tensor | float, seed: int = 0, targeted: bool = False, *,
           random_start: bool = True, loss: str = "ce", early_stop: bool = False) -> torch.Tensor:
    """As `pgd_linf`, in the l2 norm: ||x_adv - x||_2 <= eps per image."""
    return _pgd(model, x, _criterion(labels, targeted), eps, steps, step_size, norm="l2", seed=seed,
                random_start=random_start, loss=loss, early_stop=early_stop)[0]


def _criterion(labels: torch.Tensor, targeted: bool) -> Criterion:
    return Targeted(labels) if targeted else Untargeted(labels)


def _pgd(model: nn.Module, x: torch.Tensor, criterion: Criterion, eps: torch.Tensor | float, steps: int,
         step_size: torch.Tensor | float, *, norm: str, seed: int,
         random_start: bool, loss: str, early_stop: bool, eot_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """The shared loop. Returns (x_adv (N, C, H, W) in x's dtype, queries (N,) int64).

    queries: model evaluations (one forward + backward each) spent on an image; `steps` for every
    image, or with `early_stop` the evaluation at which the image was first found adversarial (it is
    frozen from then on)."""
    ball = get_norm(norm)
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    n, device = x.shape[0], x.device
    x0 = x.detach().float()  # (N, C, H, W), the working precision
    view = (n,) + (1,) * (x.dim() - 1)
    eps_t = _per_image(eps, n, device, "eps").view(view)  # (N, 1, 1, 1)
    step_t = _per_image(step_size, n, device, "step_size").view(view)  # (N, 1, 1, 1)
    criterion = criterion.to(device)

    adv = x0.clone()
    if random_start:
        adv = (x0 + _random_start(image_keys(x0, seed), x0.shape, norm) * eps_t).clamp_(0.0, 1.0)
    queries = torch.zeros(n, dtype=torch.long, device=device)
    frozen = torch.zeros(n, dtype=torch.bool, device=device)  # early stop: already adversarial
    for _ in range(steps):
        adv.requires_grad_(True)
        grad = torch.zeros_like(adv)
        for _ in range(eot_samples):  # EOT: the mean gradient over passes of a randomised model
            with torch.enable_grad():
                logits = model(adv.to(x.dtype)).float()  # (N, K)
                objective = criterion.loss(logits) if loss == "ce" else criterion.margin_loss(logits)  # (N,), ascend
                grad += torch.autograd.grad(objective.sum(), adv)[0]  # sum: each image's gradient is its own
        adv = adv.detach()
        queries += (~frozen).long() * eot_samples
        if early_stop:
            with torch.no_grad():
                frozen |= criterion.is_adversarial(logits.detach())
        step = ball.steepest(grad) * step_t
        new = ball.project(adv + step, x0, eps_t)
        adv = torch.where(frozen.view(view), adv, new) if early_stop else new
    return adv.to(x.dtype), queries


def _per_image(value: torch.Tensor | float, n: int, device: torch.device, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32).to(device)
    if t.dim() == 0:
        return t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"{name} must be a float or a tensor of shape ({n},), got shape {tuple(t.shape)}")
    return t


def _random_start(keys: torch.Tensor, shape: torch.Size, norm: str) -> torch.Tensor:
    """A unit-budget random perturbation (N, C, H, W) from per-image keys (N,): uniform in the l_inf
    ball, or uniform in the l2 ball (uniform direction, radius u**(1/D)). Drawn on the keys' device."""
    d = math.prod(shape[1:])
    if norm == "linf":
        return (uniform(step_keys(keys, _START_STREAM, 0), (d,)) * 2.0 - 1.0).view(shape)
    direction = normal(step_keys(keys, _START_STREAM, 1), (d,))  # (N, D)
    direction = direction / direction.norm(dim=1, keepdim=True).clamp_min(1e-12)
    radius = uniform(step_keys(keys, _START_STREAM, 2), (1,)).pow(1.0 / d)  # (N, 1)
    return (direction * radius).view(shape)


# ---------------------------------------------------------------- plugins
@register_attack("fgsm", threat="white-box", tasks={"classification", "segmentation"})
class FGSM(Attack):
    """FGSM (Goodfellow et al., ICLR 2015): one signed-gradient step of size eps in l_inf."""

    quick_settings: ClassVar[dict[str, Any]] = {"eps": 0.3}

    norm = "linf"

    def __init__(self, *, eps: float = 8 / 255, loss: str = "ce", eot_samples: int = 1) -> None:
        self.eps = NORMS["linf"].check_eps(eps)
        self.loss = check_choice("loss", loss, LOSSES)
        self.eot_samples = positive_int("eot_samples", eot_samples)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *,
            seed: int, starting_points: torch.Tensor | None) -> AttackResult:
        n = x.shape[0]
        eps = torch.full((n,), self.eps, device=x.device)
        x_adv, queries = _pgd(model, x, criterion, eps, 1, eps, norm="linf", seed=seed, random_start=False,
                              loss=self.loss, early_stop=False, eot_samples=self.eot_samples)
        return _result(x_adv, queries)


@register_attack("pgd", threat="white-box", tasks={"classification", "segmentation"}, default_of=("advlab.attack",))
class PGD(Attack):
    """PGD (Madry et al., ICLR 2018): projected gradient steps from a random start, l_inf or l2 (no start: I-FGSM)."""

    quick_settings: ClassVar[dict[str, Any]] = {"eps": 0.3}
    probe_settings: ClassVar[dict[str, Any] | None] = {"eps": 1.0, "steps": 10, "norm": "linf", "random_start": False}

    norm = "linf"  # the default of the `norm` setting; each instance overrides it with its own

    def __init__(self, *, eps: float = 8 / 255, steps: int = 10, step_size: float | None = None,
                 norm: str = "linf", random_start: bool = True, loss: str = "ce", early_stop: bool = False,
                 eot_samples: int = 1) -> None:
        self.norm = check_choice("norm", norm, tuple(NORMS))  # type: ignore[misc]  # instance overrides the ClassVar
        self.eps = NORMS[norm].check_eps(eps)
        self.steps = positive_int("steps", steps)
        if step_size is None:
            step_size = 2.5 * self.eps / steps  # Madry et al.'s choice
        elif not is_real(step_size) or not 0 < step_size < math.inf:
            raise ValueError(f"step_size must be a positive number (or None for 2.5 * eps / steps), got {step_size!r}")
        self.step_size = float(step_size)
        self.random_start = check_bool("random_start", random_start)
        self.loss = check_choice("loss", loss, LOSSES)
        self.early_stop = check_bool("early_stop", early_stop)
        self.eot_samples = positive_int("eot_samples", eot_samples)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *,
            seed: int, starting_points: torch.Tensor | None) -> AttackResult:
        n = x.shape[0]
        x_adv, queries = _pgd(model, x, criterion, torch.full((n,), self.eps, device=x.device), self.steps,
                              torch.full((n,), self.step_size, device=x.device), norm=self.norm, seed=seed,
                              random_start=self.random_start, loss=self.loss, early_stop=self.early_stop,
                              eot_samples=self.eot_samples)
        return _result(x_adv, queries)


def _result(x_adv: torch.Tensor, queries: torch.Tensor) -> AttackResult:
    # success and distance are decided by Attack.__call__'s verification pass
    empty = torch.zeros(x_adv.shape[0], device=x_adv.device)
    return AttackResult(x_adv=x_adv, success=empty.bool(), queries=queries, distance=empty)
