"""Square Attack (Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020; reference code max-andr/square-attack and
fra31/auto-attack): the score-based component of AutoAttack, and its check that the gradient
attacks worked, since no gradient masking stops a random search.

Random search on the margin loss z_y - max_{i != y} z_i (minimised; below 0 the image is fooled). Each
query changes one square window of side s (its area p of the image, p halved on a fixed schedule from
p_init = 0.8, rescaled to the query budget):
- l_inf: the window is set to x +- eps with one random sign per channel (a sign vector that would
  change nothing is redrawn, as in the reference); the start is vertical stripes of +- eps;
- l2: the window receives a centred pseudo-Gaussian pattern (nested rectangles, weights 1/r^2) with a
  random sign per channel, and the mass of a second window is moved into it, so the perturbation
  keeps l2 norm eps; the start is a 5x5 grid of such patterns.
A candidate replaces the current point when it lowers the loss (or fools the model).

Batched: every image draws its own window and signs from the counter-based streams of `advlab.core.rng`
(keyed by the seed, its own pixels and the query index), so an image gets the same search alone or in
any batch (the reference shares one window across a batch). Images fooled leave the batch every
`compact_every` queries.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from advlab.core.attack import Attack, AttackResult
from advlab.core.checks import check_choice, is_real, positive_int
from advlab.core.criteria import Criterion
from advlab.core.norms import NORMS
from advlab.core.registry import register_attack
from advlab.core.rng import image_keys, step_keys, uniform

_SQUARE_STREAM = 61  # advlab.core.rng stream of the search (step = query index; 0 = the start)
SIGN_TRIES = 8  # l_inf: sign vectors drawn per query, the first that changes the window is used


def p_selection(p_init: float, query: int, budget: int) -> float:
    """The window's share of the image at a query: p_init halved at 10, 50, 200, 500, 1000, 2000, 4000,
    6000 and 8000 queries of a 10,000-query budget (rescaled to `budget`)."""
    it = int(query / budget * 10000)
    for halvings, edge in enumerate((10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)):
        if it <= edge:
            return p_init / 2 ** halvings
    return p_init / 512


def _window_masks(h: int, w: int, s: int, top: torch.Tensor, left: torch.Tensor) -> torch.Tensor:
    """(A,) window corners -> (A, 1, h, w) float masks of the s x s windows."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows[None] >= top[:, None]) & (rows[None] < top[:, None] + s)  # (A, h)
    in_cols = (cols[None] >= left[:, None]) & (cols[None] < left[:, None] + s)  # (A, w)
    return (in_rows[:, :, None] & in_cols[:, None, :]).float()[:, None]


def _corners(u: torch.Tensor, h: int, w: int, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, 2) uniforms -> window corners (A,), (A,) with the window inside the image."""
    top = (u[:, 0] * (h - s + 1)).long().clamp(max=h - s)
    left = (u[:, 1] * (w - s + 1)).long().clamp(max=w - s)
    return top, left


def _rectangles(rows: int, cols: int) -> torch.Tensor:
    """Nested rectangles around the centre weighted 1/r^2 (the reference's eta_rectangles), unit l2."""
    delta = torch.zeros(rows, cols)
    r0, c0 = rows // 2, cols // 2
    for r in range(max(rows // 2 + 1, cols // 2 + 1)):
        delta[max(r0 - r, 0):min(r0 - r + 2 * r + 1, rows), max(c0 - r, 0):min(c0 - r + 2 * r + 1, cols)] += 1.0 / (r + 1) ** 2
    return delta / delta.norm().clamp_min(1e-12)


def pseudo_gaussian(s: int) -> torch.Tensor:
    """(s, s) the reference's l2 pattern: rectangles on the top half, negated on the bottom half, unit l2."""
    delta = torch.zeros(s, s)
    delta[:s // 2] = _rectangles(s // 2, s) if s // 2 > 0 else 0.0
    delta[s // 2:] = -_rectangles(s - s // 2, s)
    return delta / delta.norm().clamp_min(1e-12)


def _placed(pattern: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int,
            transpose: torch.Tensor) -> torch.Tensor:
    """(s, s) pattern placed at each image's window (A,), transposed where `transpose` (A,): (A, 1, h, w)."""
    s = pattern.shape[0]
    r = torch.arange(h, device=top.device)[None] - top[:, None]  # (A, h) row inside the window
    c = torch.arange(w, device=top.device)[None] - left[:, None]  # (A, w)
    inside = ((r >= 0) & (r < s))[:, :, None] & ((c >= 0) & (c < s))[:, None, :]  # (A, h, w)
    rr, cc = r.clamp(0, s - 1)[:, :, None], c.clamp(0, s - 1)[:, None, :]
    flip = transpose[:, None, None]
    values = torch.where(flip, pattern[cc, rr], pattern[rr, cc])  # (A, h, w)
    return (values * inside)[:, None]


class _Loss:
    """Margin loss and verdicts of a criterion (minimised; <= 0 once the target is fooled), on the logits
    averaged over `samples` passes (Expectation over Transformation for a randomised model, Athalye et al.,
    ICML 2018: the search then climbs the expected margin, not one noise draw's)."""

    def __init__(self, model: nn.Module, criterion: Criterion, dtype: torch.dtype, samples: int = 1) -> None:
        self.model, self.criterion, self.dtype, self.samples = model, criterion, dtype, samples

    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            logits = sum(self.model(x.to(self.dtype)).float() for _ in range(self.samples)) / self.samples
            part = self.criterion.subset(index)
            return -part.margins(logits)[:, 0], part.is_adversarial(logits)


@register_attack("square", threat="score", tasks={"classification"})
class Square(Attack):
    """Square Attack (Andriushchenko et al., ECCV 2020): score-based random search over square windows, l_inf or l2."""

    quick_settings: ClassVar[dict[str, Any]] = {"eps": 0.3, "max_queries": 300}

    norm = "linf"  # the default of the `norm` setting; each instance overrides it with its own

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", max_queries: int = 5000, p_init: float = 0.8,
                 compact_every: int = 10, eot_samples: int = 1) -> None:
        self.norm = check_choice("norm", norm, tuple(NORMS))  # type: ignore[misc]  # instance overrides the ClassVar
        self.eps = NORMS[norm].check_eps(eps)
        self.max_queries = positive_int("max_queries", max_queries)
        if not is_real(p_init) or not 0 < p_init <= 1:
            raise ValueError(f"p_init must be a share of the image in (0, 1] (the paper's 0.8), got {p_init!r}")
        self.p_init = float(p_init)
        self.compact_every = positive_int("compact_every", compact_every)
        self.eot_samples = positive_int("eot_samples", eot_samples)  # passes averaged per query (randomised models)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, seed: int,
            starting_points: torch.Tensor | None) -> AttackResult:
        n, c, h, w = x.shape
        if min(h, w) < 2:
            raise ValueError(f"square needs images of at least 2x2 pixels, got {h}x{w}")
        x0 = x.detach().float()
        keys = image_keys(x0, seed)  # (N,)
        loss_of = _Loss(model, criterion, x.dtype, self.eot_samples)
        everyone = torch.arange(n, device=x.device)
        best = self._start(x0, keys)  # (N, C, H, W)
        loss, success = loss_of(best, everyone)  # (N,), (N,)
        queries = torch.full((n,), self.eot_samples, dtype=torch.long, device=x.device)
        live = (~success).nonzero().squeeze(1)
        pattern_cache: dict[int, torch.Tensor] = {}
        for q in range(1, self.max_queries):
            if live.numel() == 0:
                break
            u = uniform(step_keys(keys[live], _SQUARE_STREAM, q), (5 + c * SIGN_TRIES,))  # (A, 5 + c * tries)
            p = p_selection(self.p_init, q, self.max_queries)
            if self.norm == "linf":
                candidate = self._linf_step(x0[live], best[live], u, p)
            else:
                candidate = self._l2_step(x0[live], best[live], u, p, pattern_cache)
            new_loss, fooled = loss_of(candidate, live)
            queries[live] += (~success[live]).long() * self.eot_samples
            better = ((new_loss < loss[live]) | fooled) & ~success[live]
            best[live] = torch.where(better[:, None, None, None], candidate, best[live])
            loss[live] = torch.where(better, new_loss, loss[live])
            success[live] |= fooled & better
            if q % self.compact_every == 0:
                live = live[~success[live]]
        return AttackResult(x_adv=best.to(x.dtype), success=success, queries=queries,
                            distance=torch.zeros(n, device=x.device))

    # ---------------------------------------------------------------- l_inf
    def _start(self, x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """l_inf: vertical stripes of +- eps; l2: a grid of pseudo-Gaussian patterns (side h // 5) with a
        random sign per channel and a random orientation, scaled to l2 norm eps."""
        n, c, h, w = x0.shape
        s = h // 5
        rows, cols = (h // s, w // s) if s >= 1 else (0, 0)
        u = uniform(step_keys(keys, _SQUARE_STREAM, 0), (max(c * w, rows * cols * (c + 1)),))
        if self.norm == "linf" or s < 1:
            signs = torch.where(u[:, :c * w] < 0.5, -1.0, 1.0).view(n, c, 1, w)
            if self.norm == "linf":
                return (x0 + self.eps * signs).clamp(0.0, 1.0)
            return (x0 + self.eps * _unit(signs.expand_as(x0))).clamp(0.0, 1.0)
        pattern = pseudo_gaussian(s).to(x0.device)
        top0, left0 = (h - rows * s) // 2, (w - cols * s) // 2
        delta = torch.zeros_like(x0)
        for i in range(rows):
            for j in range(cols):
                draws = u[:, (i * cols + j) * (c + 1):(i * cols + j + 1) * (c + 1)]  # (N, C + 1)
                signs = torch.where(draws[:, :c] < 0.5, -1.0, 1.0)[:, :, None, None]
                top = torch.full((n,), top0 + i * s, dtype=torch.long, device=x0.device)
                left = torch.full((n,), left0 + j * s, dtype=torch.long, device=x0.device)
                delta += _placed(pattern, top, left, h, w, draws[:, c] < 0.5) * signs
        return (x0 + self.eps * _unit(delta)).clamp(0.0, 1.0)

    def _linf_step(self, x0: torch.Tensor, best: torch.Tensor, u: torch.Tensor, p: float) -> torch.Tensor:
        a, c, h, w = x0.shape
        s = min(max(round(math.sqrt(p * h * w)), 1), h - 1, w - 1)
        top, left = _corners(u[:, :2], h, w, s)
        mask = _window_masks(h, w, s, top, left)  # (A, 1, h, w)
        lo, hi = (x0 - self.eps).clamp(0.0, 1.0), (x0 + self.eps).clamp(0.0, 1.0)
        # does setting the window to x + eps (resp. x - eps) change channel k? (A, C) each
        area = mask.bool().expand_as(x0)
        up = ((hi - best).abs() > 1e-7).logical_and(area).flatten(2).any(dim=2)
        down = ((lo - best).abs() > 1e-7).logical_and(area).flatten(2).any(dim=2)
        signs = u[:, 5:5 + c * SIGN_TRIES].view(a, SIGN_TRIES, c) < 0.5  # (A, tries, C) True = +eps
        changes = torch.where(signs, up[:, None], down[:, None]).any(dim=2)  # (A, tries)
        pick = changes.float().argmax(dim=1)  # the first that changes something (the first if none does)
        chosen = signs[torch.arange(a, device=x0.device), pick]  # (A, C)
        target = torch.where(chosen[:, :, None, None], hi, lo)  # (A, C, h, w)
        return torch.where(mask.bool(), target, best)

    # ---------------------------------------------------------------- l2
    def _l2_step(self, x0: torch.Tensor, best: torch.Tensor, u: torch.Tensor, p: float,
                 cache: dict[int, torch.Tensor]) -> torch.Tensor:
        c, h, w = x0.shape[1:]
        s = max(round(math.sqrt(p * h * w)), 3)
        s = min(s + (s % 2 == 0), h - 1, w - 1)
        if s not in cache:
            cache[s] = pseudo_gaussian(s).to(x0.device)
        top, left = _corners(u[:, :2], h, w, s)
        top2, left2 = _corners(u[:, 2:4], h, w, s)
        mask1, mask2 = _window_masks(h, w, s, top, left), _window_masks(h, w, s, top2, left2)  # (A, 1, h, w)
        delta = best - x0  # (A, C, h, w)
        norm_image = _norms(delta)  # (A, 1, 1, 1)
        norm_windows = _norms(delta * torch.maximum(mask1, mask2))  # the mass of both windows
        in_window1 = (delta * mask1).flatten(2).norm(dim=2)[:, :, None, None]  # (A, C, 1, 1)
        signs = torch.where(u[:, 5:5 + c] < 0.5, -1.0, 1.0)[:, :, None, None]  # (A, C, 1, 1)
        flip = u[:, 4] < 0.5
        new = _placed(cache[s], top, left, h, w, flip) * signs + delta * mask1 / (in_window1 + 1e-12)
        new_norm = (new * mask1).flatten(2).norm(dim=2)[:, :, None, None]  # (A, C, 1, 1)
        budget = ((self.eps ** 2 - norm_image ** 2).clamp_min(0.0) / c + norm_windows ** 2).sqrt()
        new = new * mask1 / (new_norm + 1e-12) * budget
        delta = delta * (1 - mask2)
        delta = delta * (1 - mask1) + new
        return (x0 + self.eps * _unit(delta)).clamp(0.0, 1.0)


def _norms(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))


def _unit(t: torch.Tensor) -> torch.Tensor:
    return t / (_norms(t) + 1e-12)


__all__ = ["Square", "p_selection", "pseudo_gaussian"]
