"""The Boundary Attack's walk state and step-size rule (Brendel, Rauber & Bethge, ICLR 2018,
section 3.1, adapt the steps from recent success rates; here one rate and the source step tied to
the orthogonal step, `adapt_step_sizes`), per image and batched: the images still walking, what
their steps reuse, and when the rule applies."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from advlab.core.criteria import Criterion

if TYPE_CHECKING:
    from advlab.attacks.boundary import BoundaryAttack

REFINE_AT_224 = 1000  # "auto": the first doubling after this many queries at 224 px, fewer on smaller images


@dataclass
class WalkState:
    """Per-image state of the images still in the batch; tensors are (A, ...) for A active images."""

    index: torch.Tensor  # (A,) position in the full batch
    x: torch.Tensor  # (A, D) originals, flattened
    adv: torch.Tensor  # (A, D) current adversarials
    dist: torch.Tensor  # (A,) L2 of adv - x
    keys: torch.Tensor  # (A,) noise keys
    spherical: torch.Tensor  # (A,) orthogonal step, relative to dist
    source: torch.Tensor  # (A,) step toward the original, relative to dist
    tries: torch.Tensor  # (A,) candidates judged in the current success window
    hits: torch.Tensor  # (A,) of which adversarial
    queries: torch.Tensor  # (A,) int64
    running: torch.Tensor  # (A,) bool; False once an image has finished

    def select(self, keep: torch.Tensor) -> WalkState:
        return WalkState(**{name: getattr(self, name)[keep] for name in self.__dataclass_fields__})


@dataclass
class CandidateBatch:
    """What every step of the same active images reuses, rebuilt when the batch is compacted."""

    rows: torch.Tensor  # (A,) 0 .. A-1
    candidates: Criterion  # of the A * K candidates, image by image

    @staticmethod
    def of(s: WalkState, criterion: Criterion, k: int) -> CandidateBatch:
        which = s.index.repeat_interleave(k)  # (A * K,) the image each candidate belongs to
        return CandidateBatch(rows=torch.arange(s.index.shape[0], device=s.index.device),
                              candidates=criterion.subset(which))


def adapt_step_sizes(attack: BoundaryAttack, s: WalkState) -> None:
    """Once an image's window holds `adapt_window` candidates: scale its orthogonal step sigma up
    (down) by `step_adaptation` when more (fewer) of them were adversarial than `success_band`
    says, then set the source step to `source_factor` * sigma^2 / 2.

    Why one rate suffices: near a flat boundary at angle theta to the perturbation, in m
    directions, a candidate (rotated by sigma, projected back onto the sphere, which moves it
    inward by sigma^2 / 2, then shortened by the source step eps) is adversarial when a standard
    normal g exceeds sqrt(m) (eps + sigma^2 / 2) / (sigma tan theta). The distance gained per
    candidate, eps P(accept), is largest at eps = sigma^2 / 2 whatever theta and m, with 11.5% of
    candidates adversarial; a boundary curving around the original asks for less (0.5 did best
    of 0.35 to 1 on the two Fashion-MNIST CNNs together, docs/boundary.md). So the source step
    follows the orthogonal one and only the candidates' own success is needed: the paper's second
    rate, of orthogonal steps alone, cost an extra evaluation per candidate every few steps (20% of
    the budget)."""
    ready = s.tries >= attack.adapt_window
    rate = s.hits / s.tries.clamp_min(1)
    low, high = attack.success_band
    f = attack.step_adaptation
    scale = torch.where(ready & (rate > high), f, torch.where(ready & (rate < low), 1 / f, 1.0))
    s.spherical = (s.spherical * scale).clamp_(max=1.0)
    s.source = source_step_for(attack, s.spherical)
    s.tries, s.hits = s.tries * ~ready, s.hits * ~ready


def source_step_for(attack: BoundaryAttack, spherical: torch.Tensor) -> torch.Tensor:
    """(A,) orthogonal steps -> (A,) source steps, `source_factor` * sigma^2 / 2 (at most 0.5)."""
    return (attack.source_factor * spherical**2 / 2).clamp(max=0.5)


def perturbation_scale(diff: torch.Tensor, dist: torch.Tensor, share: float) -> torch.Tensor:
    """(A, D) perturbations and their (A,) norms -> (A, D) per-pixel scale of the proposals,
    (1 - share) + share |delta_i| / rms(delta): a diagonal proposal covariance read off the
    perturbation itself. Where the perturbation is large the walk takes larger steps, where it is
    nearly gone smaller ones, so more of each step moves the mass the distance is made of (the
    diagonal covariance adaptation of Dong et al., "Efficient Decision-based Black-box Adversarial
    Attacks on Face Recognition", CVPR 2019, learns such a scale from accepted steps instead)."""
    rms = dist[:, None].clamp_min(1e-12) / diff.shape[1] ** 0.5  # (A, 1)
    return (1 - share) + share * diff.abs() / rms


def source_weights(diff: torch.Tensor, dist: torch.Tensor, sharpness: float) -> torch.Tensor:
    """(A, D) perturbations and their (A,) norms -> (A, D) per-pixel weights of the source step,
    proportional to 1 / (1 + k |delta_i| / rms(delta)) for k = `sharpness` and scaled so that
    sum_i delta_i^2 w_i = |delta|^2: a source step eps then shortens the perturbation by eps to
    first order, as the same step on every pixel would, but takes more off the pixels where the
    perturbation is small. What the walk's steps leave behind besides the perturbation the
    boundary asks for is spread thin over many pixels (on the 28 px Fashion-MNIST CNNs the
    white-box perturbations' participation ratio is 40-110 of 784 pixels), so it goes first; the
    pixels that carry the perturbation keep most of theirs. The counterpart of
    `perturbation_scale` for the step toward the original."""
    rms = dist[:, None].clamp_min(1e-12) / diff.shape[1] ** 0.5  # (A, 1)
    w = 1.0 / (1.0 + sharpness * diff.abs() / rms)  # (A, D)
    return w * (dist**2)[:, None] / (diff**2 * w).sum(1, keepdim=True).clamp_min(1e-30)


def window_may_be_full(attack: BoundaryAttack, step: int) -> bool:
    """Whether some image's success window can be full after this step. Every running image collects
    `candidates` outcomes per step from step 0 on, so the windows fill on these steps only; on the
    others `adapt_step_sizes` would change nothing."""
    return (step + 1) % -(-attack.adapt_window // attack.candidates) == 0


def grid_level(attack: BoundaryAttack, step: int, side: int) -> int:
    """How many times the prior's grid has doubled by this step: level L starts once the walk has
    spent R (4^L - 1) / 3 queries per image (R = `refine_after`; each level lasts 4 times as long
    as the one before, as it has 4 times the directions), until the grid reaches the image's own
    resolution (the prior then draws full-resolution noise). "auto": R = 1,000 at 224 px, in
    proportion to the image side below it (28 px: 125), so a small image's 4 x 4 grid does not
    confine the walk. Counted from the step index, which every image shares, so the whole batch
    switches at once and the switch does not depend on the batch: every step costs `candidates`
    queries."""
    if attack.refine_after is None:
        return 0
    every = attack.refine_after if attack.refine_after != "auto" else refine_interval(side)
    spent = attack.candidates * step  # queries of steps 0 .. step-1
    level = 0
    while spent >= level_start(every, level + 1):
        level += 1
    return level


def level_start(every: int, level: int) -> int:
    """Queries per image after which grid level `level` starts: R (4^L - 1) / 3 for R = `every`."""
    return every * (4**level - 1) // 3


def refine_interval(side: int) -> int:
    """`refine_after="auto"`: 1,000 queries at 224 px (and above), in proportion to the image side
    below it, at least 50 (28 px: 125)."""
    return max(50, round(REFINE_AT_224 * min(1.0, side / 224)))
