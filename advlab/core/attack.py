"""The attack contract: settings in `__init__`, data and budget at call time.

`attack(model, x, criterion, *, seed=0) -> AttackResult`. `__call__` does the shared work (input
checks, clipping to [0, 1], a final verification pass that decides `success`, distances); subclasses
implement `run` and, where they have one, their `bound` (the pattern of foolbox 3, Rauber et al., JOSS
2020). What a run does with an attack besides calling it (its row's extra keys, a control row, tables
across models) is the runner's, in the attack's `Companion` (`advlab.core.companion`).

Randomness rule: an attack's random draws for an image are a function of the run seed and that
image's own pixels only (`advlab.core.rng.image_keys(x, seed)` and the counter-based streams there), never
of its position, its batch or a chunk index; so an image gives the same result alone, inside any
batch, in any shard and after any resume. A set-level attack (a universal perturbation) keys its
draws by the seed alone.
"""
from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from advlab.core.checks import is_real
from advlab.core.criteria import Criterion
from advlab.core.errors import AdvlabError
from advlab.core.norms import MEASURES, NORMS

VERIFY_BATCH = 256  # images per forward pass of the final success check


@dataclass
class AttackResult:
    x_adv: torch.Tensor  # (N, C, H, W) in [0, 1]
    success: torch.Tensor  # (N,) bool, decided by one verification pass on x_adv
    queries: torch.Tensor  # (N,) int64, model evaluations spent per image
    distance: torch.Tensor  # (N,) float, in the attack's norm, pixels in [0, 1]
    extras: dict[str, Any] = field(default_factory=dict)  # what else the attack returns (e.g. a universal v)
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (N,) one value per image
    traces: dict[str, torch.Tensor] = field(default_factory=dict)  # name -> (T, N) one value per step and image

    def to(self, device: torch.device | str) -> AttackResult:
        def moved(values: dict[str, Any]) -> dict[str, Any]:
            return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in values.items()}

        return AttackResult(self.x_adv.to(device), self.success.to(device), self.queries.to(device),
                            self.distance.to(device), moved(self.extras), moved(self.per_image), moved(self.traces))


@dataclass
class SetResult:
    """A set-level attack's result over images it streamed (`Attack.attack_set`): no images, only
    what makes them (`Attack.adversarial(extras)`) and the per-image outcome."""

    success: torch.Tensor  # (N,) bool, decided on the adversarial images
    queries: torch.Tensor  # (N,) int64, model evaluations spent per image
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. the universal perturbation


class Attack(abc.ABC):
    """Base class of every attack plugin. Register subclasses with `@register_attack`."""

    name: ClassVar[str] = ""
    norm: ClassVar[str] = "l2"
    path_settings: ClassVar[tuple[str, ...]] = ()  # settings that name files (made absolute in config.yaml)
    model_settings: ClassVar[tuple[str, ...]] = ()  # settings that name a model (name or model entry), likewise
    minimal_perturbation: ClassVar[bool] = False  # minimises the distance: its distances give a robustness curve
    collective: ClassVar[bool] = False  # under torchrun every rank runs it on all images and shares the work itself
    universal: ClassVar[bool] = False  # set-level: the runner streams every image through `attack_set` in one call
    # settings that run in seconds on a small CPU model: the catalog-driven tests run every attack with them
    quick_settings: ClassVar[dict[str, Any]] = {}
    # settings of an unbounded l_inf (eps 1) gradient attack without random start: the runner's sanity
    # probe (advlab.run.sanity) runs the first attack of the catalog that gives them (AutoAttack's check)
    probe_settings: ClassVar[dict[str, Any] | None] = None

    def __call__(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *,
                 seed: int = 0, starting_points: torch.Tensor | None = None) -> AttackResult:
        """Attack images `x` (N, C, H, W) in [0, 1] with the run's `seed`. `starting_points` (N, C, H, W),
        optional, are adversarial images to begin from (decision-based attacks, targeted mode).
        No images (N = 0) is a valid input with an empty result."""
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise AdvlabError(f"seed must be an integer, got {seed!r}")
        _check_images(x, "x")
        if len(criterion) != x.shape[0]:
            raise AdvlabError(f"criterion has {len(criterion)} labels for {x.shape[0]} images; pass one per image")
        if starting_points is not None:
            _check_images(starting_points, "starting_points")
            if starting_points.shape != x.shape:
                raise AdvlabError(f"starting_points shape {tuple(starting_points.shape)} differs from images "
                                  f"{tuple(x.shape)}; give one starting image per image")
        if model.training:
            warnings.warn("model is in train mode (batch norm / dropout active); call model.eval() first",
                          stacklevel=2)
        criterion = criterion.to(x.device)
        if x.shape[0] == 0:
            return empty_result(x)
        result = self.run(model, x, criterion, seed=seed, starting_points=starting_points)
        x_adv = result.x_adv.clamp(0.0, 1.0)
        with torch.no_grad():  # in slices: a universal attack hands over a whole data set at once
            success = torch.cat([part.is_adversarial(part.evaluate(model, x_adv[i:i + VERIFY_BATCH]).float())
                                 for i in range(0, x_adv.shape[0], VERIFY_BATCH)
                                 for part in [criterion.subset(slice(i, i + VERIFY_BATCH))]])
        result.x_adv = x_adv
        result.success = success
        result.distance = MEASURES[self.norm].distance(x, x_adv)
        return result

    @abc.abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *,
            seed: int, starting_points: torch.Tensor | None) -> AttackResult:
        """Produce candidate adversarials for N >= 1 images; `success` and `distance` are recomputed by
        `__call__`. Draw randomness per image from `image_keys(x, seed)` (see the module docstring)."""

    def attack_set(self, model: nn.Module, x: Any, criterion: Criterion, *, seed: int,
                   device: torch.device) -> SetResult:
        """Set-level attacks (`universal`): attack all images of `x` (`advlab.core.images.Images`, read in
        batches as needed, never whole) at once; the adversarial images follow from `adversarial`."""
        raise NotImplementedError(f"{type(self).__name__} is not a set-level attack")

    def adversarial(self, extras: dict[str, Any]) -> Any:
        """Set-level attacks: from `attack_set`'s extras, the map (B, C, H, W) images -> their adversarials."""
        raise NotImplementedError(f"{type(self).__name__} is not a set-level attack")

    def bound(self) -> tuple[str, float] | None:
        """(norm, eps) that every adversarial of this attack lies within, or None for an attack without
        one (unbounded, or minimising the distance): the threat models a run derives when the user names
        none (`advlab.core.threat`)."""
        eps = getattr(self, "eps", None)
        if self.minimal_perturbation or not is_real(eps) or self.norm not in NORMS:
            return None
        return self.norm, float(eps)

    def params(self) -> dict[str, Any]:
        """The settings, for results.json (subclasses store them as public attributes)."""
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def prepare(self, model: nn.Module, shape: tuple[int, ...], device: torch.device) -> None:
        """Check that the attack fits this model and images of this (C, H, W) shape, loading what it needs
        besides them (e.g. a surrogate model); the runner calls it before anything is written, and an
        AdvlabError here is the one line the user sees."""


def empty_result(x: torch.Tensor) -> AttackResult:
    """The result of attacking no images: x (0, C, H, W) -> empty tensors of the right shapes."""
    return AttackResult(x_adv=x.clone(), success=torch.zeros(0, dtype=torch.bool, device=x.device),
                        queries=torch.zeros(0, dtype=torch.long, device=x.device),
                        distance=torch.zeros(0, device=x.device))


def _check_images(x: torch.Tensor, field_name: str) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise AdvlabError(f"{field_name} must be a float tensor in [0, 1], got {type(x).__name__}"
                          f"{'' if not isinstance(x, torch.Tensor) else ' of ' + str(x.dtype)}")
    if x.dim() != 4:
        raise AdvlabError(f"{field_name} must be NCHW (4 dims), got shape {tuple(x.shape)}; add a batch dim")
    if x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise AdvlabError(f"{field_name} must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}]; "
                          "pass unnormalised images (the model wrapper normalises)")
