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
    transfers); then the closest of `starts` adversarial noise draws (`closest_noise_starts`). Every
    start is brought close to the decision boundary by a binary search on its blend toward the original."""
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
            start = blend_search(attack, x, start, ok, queries, is_adv)  # the transfers, toward the originals
        return closest_noise_starts(attack, x, keys, start, ok, queries, is_adv, shape), queries
    start = torch.where(ok[:, None], start, torch.full_like(x, math.inf))
    return blend_search(attack, x, start, ok, queries, is_adv), queries


def closest_noise_starts(attack: BoundaryAttack, x: torch.Tensor, keys: torch.Tensor, start: torch.Tensor,
                         ok: torch.Tensor, queries: torch.Tensor, is_adv,
                         shape: tuple[int, ...]) -> torch.Tensor:
    """For each image without a start: adversarial noise draws (up to `init_trials` draws), each
    brought to the boundary by the blend search, until `starts` of them are found; the closest is the
    start. Different draws often land in other classes' regions, some much nearer the original
    (PGD-trained Fashion-MNIST CNN, 16 images, 5,000 evaluations, seeds 0-2: per image 2.7% above
    foolbox's 20,000 steps in geometric mean with one start, 4.8% below with 8; docs/boundary.md).
    (N, D) starts, inf rows where none was found."""
    n = x.shape[0]
    best = torch.where(ok[:, None], start, torch.full_like(x, math.inf))
    best_l2 = torch.full_like(x[:, 0], math.inf)  # (N,) of the closest start so far, for the images drawing
    drawing = ~ok  # the images without a start from the original itself or the surrogate
    found = torch.zeros(n, dtype=torch.long, device=x.device)
    budget = attack.max_queries if attack.max_queries is not None else math.inf
    for trial in range(attack.init_trials):
        todo = (drawing & (found < attack.starts) & (queries < budget)).nonzero().squeeze(1)
        if todo.numel() == 0:
            break
        noise = starting_noise(attack.prior, step_keys(keys[todo], _INIT_STREAM, trial), shape,
                               ratio=attack.lowfreq_ratio, frequency=attack.perlin_frequency)  # (T, D)
        hit = is_adv(noise, todo)
        queries[todo] += 1
        todo, noise = todo[hit], noise[hit]
        if todo.numel() == 0:
            continue
        found[todo] += 1
        everyone_hit = torch.ones(todo.numel(), dtype=torch.bool, device=x.device)
        blended = blend_search(attack, x[todo], noise, everyone_hit, queries, is_adv, todo)  # (H, D)
        l2 = (blended - x[todo]).norm(dim=1)
        closer = l2 < best_l2[todo]
        best[todo[closer]], best_l2[todo[closer]] = blended[closer], l2[closer]
    return best


def blend_search(attack: BoundaryAttack, x: torch.Tensor, start: torch.Tensor, ok: torch.Tensor,
                 queries: torch.Tensor, is_adv, which: torch.Tensor | None = None,
                 iterations: int = 12) -> torch.Tensor:
    """Binary search of the smallest blend (1 - a) * x + a * start that stays adversarial, for the
    (M, D) rows of images `which` (M,) (all N images when None); `queries` (N,) counts in place.
    Rows without a start (`ok` False) keep theirs (inf)."""
    which = torch.arange(x.shape[0], device=x.device) if which is None else which
    budget = attack.max_queries if attack.max_queries is not None else math.inf
    lo = torch.zeros(x.shape[0], device=x.device)
    hi = torch.ones(x.shape[0], device=x.device)
    safe_start = torch.where(ok[:, None], start, x)
    searching = ok & (safe_start != x).any(dim=1)
    for _ in range(iterations):
        searching &= queries[which] < budget
        mid = (lo + hi) / 2
        hit = is_adv(x + mid[:, None] * (safe_start - x), which)
        hi = torch.where(searching & hit, mid, hi)
        lo = torch.where(searching & ~hit, mid, lo)
        queries[which] += searching.long()
    blended = x + hi[:, None] * (safe_start - x)
    return torch.where(ok[:, None], blended, start)
