"""The Boundary Attack's walk state and step-size rules (Brendel, Rauber & Bethge, ICLR 2018,
section 3.1: adapt the orthogonal and the source step from recent success rates), per image and
batched: the images still walking, what their steps reuse, and when each rule applies."""
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
    sph_rate: torch.Tensor  # (A,) orthogonal-step success rate of the last full window
    sph_tries: torch.Tensor  # (A,) outcomes collected in the current window
    sph_hits: torch.Tensor
    src_tries: torch.Tensor
    src_hits: torch.Tensor
    queries: torch.Tensor  # (A,) int64
    running: torch.Tensor  # (A,) bool; False once an image has finished

    def select(self, keep: torch.Tensor) -> WalkState:
        return WalkState(**{name: getattr(self, name)[keep] for name in self.__dataclass_fields__})


@dataclass
class CandidateBatch:
    """What every step of the same active images reuses, rebuilt when the batch is compacted."""

    rows: torch.Tensor  # (A,) 0 .. A-1
    candidates: Criterion  # of the A * K candidates, image by image
    with_spherical: Criterion  # of the A * K candidates followed by their A * K spherical points

    @staticmethod
    def of(s: WalkState, criterion: Criterion, k: int) -> CandidateBatch:
        which = s.index.repeat_interleave(k)  # (A * K,) the image each candidate belongs to
        return CandidateBatch(rows=torch.arange(s.index.shape[0], device=s.index.device),
                              candidates=criterion.subset(which),
                              with_spherical=criterion.subset(torch.cat([which, which])))


def adapt_step_sizes(attack: BoundaryAttack, s: WalkState) -> None:
    """Brendel et al.'s rule: keep 20-50% of orthogonal steps adversarial (scaling both steps); then
    the source step, from the full step's success relative to the orthogonal step's (see the attack's
    module docstring; the paper's fixed 20-50% band stalls the walk when orthogonal success nears 20%)."""
    f = attack.step_adaptation
    sph_ready = s.sph_tries >= attack.adapt_window
    rate = s.sph_hits / s.sph_tries.clamp_min(1)
    s.sph_rate = torch.where(sph_ready, rate, s.sph_rate)
    low, high = attack.spherical_band
    scale = torch.where(sph_ready & (rate > high), f, torch.where(sph_ready & (rate < low), 1 / f, 1.0))
    s.spherical = (s.spherical * scale).clamp_(max=1.0)
    s.source = s.source * scale
    s.sph_tries, s.sph_hits = s.sph_tries * ~sph_ready, s.sph_hits * ~sph_ready
    src_ready = s.src_tries >= attack.adapt_window
    rate = s.src_hits / s.src_tries.clamp_min(1)
    low, high = attack.source_band[0] * s.sph_rate, attack.source_band[1] * s.sph_rate
    scale = torch.where(src_ready & (rate > high), f, torch.where(src_ready & (rate < low), 1 / f, 1.0))
    s.source = (s.source * scale).clamp_(max=0.5)
    s.src_tries, s.src_hits = s.src_tries * ~src_ready, s.src_hits * ~src_ready


def window_may_be_full(attack: BoundaryAttack, step: int) -> bool:
    """Whether some image's success window can be full after this step. Every running image collects
    `candidates` outcomes per step (per checked step for the orthogonal rate) from step 0 on, so the
    windows fill on these steps only; on the others `adapt_step_sizes` would change nothing."""
    steps_per_window = -(-attack.adapt_window // attack.candidates)
    checked = step % attack.spherical_every == 0
    return (step + 1) % steps_per_window == 0 or (checked and (step // attack.spherical_every + 1)
                                                  % steps_per_window == 0)


def grid_level(attack: BoundaryAttack, step: int, side: int) -> int:
    """How many times the prior's grid has doubled by this step: level L starts once the walk has
    spent R (4^L - 1) / 3 queries per image (R = `refine_after`; each level lasts 4 times as long
    as the one before, as it has 4 times the directions), until the grid reaches the image's own
    resolution (the prior then draws full-resolution noise). "auto": R = 1,000 at 224 px, in
    proportion to the image side below it (28 px: 125), so a small image's 4 x 4 grid does not
    confine the walk. Counted from the step index, which every image shares, so the whole batch
    switches at once and the switch does not depend on the batch: step j costs `candidates`
    queries, twice that when j % spherical_every == 0."""
    if attack.refine_after is None:
        return 0
    every = attack.refine_after if attack.refine_after != "auto" else refine_interval(side)
    spent = attack.candidates * (step + -(-step // attack.spherical_every))  # queries of steps 0 .. step-1
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
