"""Starting points of the Boundary Attack (Brendel et al., ICLR 2018): an adversarial point per
image to walk from (a surrogate's transferring adversarial, or the prior's smoothed noise), then a
binary search of the blend toward the original that brings it close to the decision boundary."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from advlab.attacks.priors import starting_noise
from advlab.attacks.surrogate import TRANSFER_RMS, transfer_step
from advlab.core.criteria import Criterion, Targeted
from advlab.core.errors import AdvlabError
from advlab.core.rng import step_keys

if TYPE_CHECKING:
    from advlab.attacks.boundary import BoundaryAttack

_INIT_STREAM = 1  # noise stream of the starting noise (the walk's proposals use another)


def initial_points(attack: BoundaryAttack, x: torch.Tensor, keys: torch.Tensor, criterion: Criterion,
                   starting_points: torch.Tensor | None, is_adv, shape: tuple[int, ...],
                   surrogate: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) adversarial starting points (rows of inf where none was found) and queries spent.
    Untargeted: with a surrogate, its adversarials at growing radii (one query each, until one
    transfers); then uniform noise, redrawn up to `init_trials` times; then a binary search on the
    blend toward the original brings the start close to the decision boundary."""
    n, d = x.shape
    queries = torch.zeros(n, dtype=torch.long, device=x.device)
    everyone = torch.arange(n, device=x.device)
    budget = attack.max_queries if attack.max_queries is not None else math.inf
    if starting_points is not None:
        start = starting_points.flatten(1).float()
        ok = is_adv(start, everyone)
        queries += 1
    elif isinstance(criterion, Targeted):
        raise AdvlabError("a targeted boundary attack needs starting_points: images the model already "
                          "classifies as the target class (the runner finds them in the data)")
    else:
        start = torch.full_like(x, math.inf)
        ok = is_adv(x, everyone)  # already misclassified: the original is its own answer
        start[ok] = x[ok]
        queries += 1
        if surrogate is not None:  # the surrogate's adversarials at growing radii until one transfers
            points = x.clone()  # (N, D)
            for rms in TRANSFER_RMS:
                todo = (~ok & (queries < budget)).nonzero().squeeze(1)  # only images still without a start
                if todo.numel() == 0:
                    break
                points[todo] = transfer_step(surrogate, x[todo], points[todo], criterion.subset(todo), shape,
                                             rms * d**0.5)
                hit = is_adv(points[todo], todo)
                queries[todo] += 1
                start[todo[hit]] = points[todo[hit]]
                ok[todo[hit]] = True
        for trial in range(attack.init_trials):
            todo = (~ok & (queries < budget)).nonzero().squeeze(1)  # the budget covers the start too
            if todo.numel() == 0:
                break
            noise = starting_noise(attack.prior, step_keys(keys[todo], _INIT_STREAM, trial), shape,
                                   ratio=attack.lowfreq_ratio, frequency=attack.perlin_frequency)  # (T, D)
            hit = is_adv(noise, todo)
            queries[todo] += 1
            start[todo[hit]] = noise[hit]
            ok[todo[hit]] = True
    start = torch.where(ok[:, None], start, torch.full_like(x, math.inf))
    return blend_search(attack, x, start, ok, criterion, queries, is_adv)

def blend_search(attack: BoundaryAttack, x: torch.Tensor, start: torch.Tensor, ok: torch.Tensor, criterion: Criterion,
                 queries: torch.Tensor, is_adv, iterations: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary search of the smallest blend (1 - a) * x + a * start that stays adversarial."""
    budget = attack.max_queries if attack.max_queries is not None else math.inf
    lo = torch.zeros(x.shape[0], device=x.device)
    hi = torch.ones(x.shape[0], device=x.device)
    safe_start = torch.where(ok[:, None], start, x)
    searching = ok & (safe_start != x).any(dim=1)
    for _ in range(iterations):
        searching &= queries < budget
        mid = (lo + hi) / 2
        hit = is_adv(x + mid[:, None] * (safe_start - x), torch.arange(x.shape[0], device=x.device))
        hi = torch.where(searching & hit, mid, hi)
        lo = torch.where(searching & ~hit, mid, lo)
        queries += searching.long()
    blended = x + hi[:, None] * (safe_start - x)
    return torch.where(ok[:, None], blended, start), queries
