"""Boundary Attack (Brendel, Rauber & Bethge, "Decision-Based Adversarial Attacks: Reliable Attacks
Against Black-Box Machine Learning Models", ICLR 2018), built for batched accelerators.

Start from an adversarial point, then repeat: a random step orthogonal to the direction of the
original (on the sphere around it) plus a step toward the original; keep the candidate if it is
still adversarial; adapt both step sizes from recent success rates. Only top-1 decisions are used.

What differs from foolbox 3's implementation (the reference, `--backend foolbox`):
- with `starts` S > 1 an untargeted walk starts from the closest of S adversarial noise draws,
  each blended toward the original (`advlab.attacks.boundary_start`): closer on small adversarially
  trained models, farther on photos, so one by default (docs/boundary.md has the numbers);
- every image is independent: its own noise stream (keyed by its pixels and the seed, see
  `advlab.core.rng`), its own step sizes and statistics, its own stopping point;
- `candidates` proposals per image per step go through the model in one forward pass, and the
  closest adversarial one is kept (the original paper also drew several per step);
- step sizes adapt once `adapt_window` outcomes are collected, which with several candidates
  is within the first steps, instead of after hundreds or thousands of steps;
- one success rate, of the candidates themselves, adapts the orthogonal step sigma, and the source
  step is `source_factor` * sigma^2 / 2, the step that gains the most distance per candidate near a
  flat boundary (`advlab.attacks.boundary_steps.adapt_step_sizes`); the paper's second rate, of
  orthogonal steps judged alone, is not measured, which spares the extra evaluation it cost per
  candidate every few steps (PGD-trained Fashion-MNIST CNN, 5,000 queries, seeds 0-2: median L2
  2.144 -> 2.098 on average; docs/boundary.md);
- finished images (budget, target L2, converged step size) leave the batch at the next
  compaction, so late steps only pay for the images still improving;
- the orthogonal step is drawn from a proposal prior (`advlab.attacks.priors`): by default
  low-frequency noise (Guo et al., UAI 2019), which on MobileNetV2 and the foolbox photos reaches
  about half the L2 of i.i.d. Gaussian proposals at 1,000 queries per image; `prior="normal"` is the
  paper's, `"perlin"` the prior of Brunner et al., ICCV 2019;
- the prior's grid doubles in resolution as the walk spends queries (coarse to fine): the coarse
  directions bring an image near the boundary fast, the finer ones keep it moving once the coarse
  subspace is used up (MobileNetV2, 18 foolbox photos, median L2 at 2,000 / 5,000 queries: one grid
  4.13 / 2.42, refined after 1,000 3.87 / 2.03). Level L starts after `refine_after` (4^L - 1) / 3
  queries, up to the image's own resolution: "auto" is 1,000 at 224 px (one doubling up to 5,000
  queries there, as before) and proportionally fewer on small images, where a 4 x 4 grid that never refined
  confined the walk (28 px Fashion-MNIST CNN, 18 images, 5,782 queries: 2.75, converged, against
  `normal`'s 1.37; refined to full resolution 1.04; bench/boundary.py);
- the candidates of a step come in mirrored pairs, eta and -eta (antithetic sampling): where the
  boundary is locally flat one of a pair leans the better way, so the better of the two is more
  aligned with the boundary's normal than the better of two independent draws (for a Gaussian
  component X: E|X| = 0.80 sigma against E max(X1, X2) = 0.56 sigma); with the refined grid, on the
  18 photos at 2,000 / 5,000 queries: independent 3.87 / 2.03, mirrored 2.99 / 1.59;
- each pixel's proposal noise is scaled by (1 - s) + s |delta_i| / rms(delta), s =
  `scale_by_perturbation` (0.2), a diagonal proposal covariance read off the perturbation delta
  (`advlab.attacks.boundary_steps.perturbation_scale`): larger steps where the perturbation is,
  smaller where it is gone (Fashion-MNIST CNN pair, 5,000 queries, seeds 0-2, mean median L2: plain
  1.129 -> 1.112, PGD-trained 2.098 -> 2.050; docs/boundary.md);
- each pixel's step toward the original is the source step times 1 / (1 + k |delta_i| / rms(delta)),
  k = `source_by_perturbation` (4), scaled so that the perturbation shortens by the source step to first
  order (`advlab.attacks.boundary_steps.source_weights`): the walk's random steps leave a thin spread of
  perturbation over many pixels besides what the boundary asks for, and that goes first (held-out
  Fashion-MNIST test images 20-99, 5,000 queries, seeds 0 / 1, per-image L2 over foolbox's 20,000 steps:
  plain 1.104 / 1.118 -> 1.038 / 1.062, PGD-trained 1.008 / 0.992 -> 0.999 / 0.994; 18 photos, median L2
  at 1,000 / 5,000 queries 4.68 / 1.66 -> 4.31 / 1.39; docs/benchmarks.md);
- with a `surrogate` model, each orthogonal step is tilted toward the surrogate's gradient
  (Brunner et al., ICCV 2019, `advlab.attacks.surrogate`); the attacked model is still queried for
  decisions only.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from advlab.attacks.boundary_start import initial_points
from advlab.attacks.boundary_steps import (
    CandidateBatch,
    WalkState,
    adapt_step_sizes,
    grid_level,
    perturbation_scale,
    source_step_for,
    source_weights,
    window_may_be_full,
)
from advlab.attacks.priors import PRIORS, mirrored, proposals
from advlab.attacks.surrogate import (
    SurrogateSetting,
    check_compatible,
    describe,
    gradient_directions,
    load_surrogate,
    surrogate_spec,
)
from advlab.core.attack import Attack, AttackResult
from advlab.core.checks import check_bool, is_real, positive_int
from advlab.core.companion import Companion, register_companion
from advlab.core.criteria import Criterion
from advlab.core.registry import register_attack
from advlab.core.rng import image_keys, step_keys
from advlab.core.stats import median

_STEP_STREAM = 3  # noise stream of the walk's proposals (the start uses 1, `boundary_start`)
DEFAULT_CANDIDATES = 2  # proposals per image per step (backend ours); `candidates=None` picks it
DEFAULT_PRIOR = "lowfreq"  # proposals for backend ours; `prior=None` picks it (foolbox: normal)
DEFAULT_FIRST_STEP, FOOLBOX_FIRST_STEP = 0.05, 0.01  # initial spherical and source step sizes; None picks them
DEFAULT_REFINE_AFTER = "auto"  # queries of the walk after which the prior's grid doubles; None keeps one grid
DEFAULT_SCALE_BY_PERTURBATION = 0.2  # share of a proposal's per-pixel scale set by |perturbation| there
DEFAULT_SOURCE_BY_PERTURBATION = 4.0  # k: each pixel's source step follows 1 / (1 + k |perturbation| / rms) there
DEFAULT_STARTS = 1  # untargeted: the closest of this many adversarial noise starts (8 on small robust models)
DEFAULT_MAX_QUERIES = 2000  # model evaluations per image for backend ours; `max_queries=None` picks it
FOOLBOX_STEPS = 1000  # backend foolbox's steps for `steps=None`; ours stops at its query budget instead


def by_perturbation(name: str, value: float | None, default: float, backend: str, *, upper: float, rule: str,
                    foolbox: str) -> float:
    """A setting that shapes the step pixel by pixel from the perturbation: None picks ours' `default`
    (0 with backend foolbox, which steps every pixel alike); a finite number in [0, `upper`], and 0 with
    backend foolbox."""
    if value is None:
        value = 0.0 if backend == "foolbox" else default
    if not is_real(value) or not (0 <= value <= upper and math.isfinite(value)):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    if backend == "foolbox" and value:
        raise ValueError(f"{name} must be 0 with backend foolbox ({foolbox})")
    return float(value)


@register_attack("boundary", threat="decision", tasks={"classification"}, default=True)
class BoundaryAttack(Attack):
    """Boundary Attack (Brendel et al., ICLR 2018): decision-based, minimises L2 from an adversarial start."""

    quick_settings: ClassVar[dict[str, Any]] = {"steps": 150, "candidates": 2, "progress": False}

    norm = "l2"
    minimal_perturbation = True
    model_settings = ("surrogate",)
    success_band = (0.1, 0.25)  # keep the share of adversarial candidates in here (flat-boundary optimum 11.5%)

    def __init__(self, *, steps: int | None = None, candidates: int | None = None, max_queries: int | None = None,
                 target_l2: float | None = None, spherical_step: float | None = None,
                 source_step: float | None = None, source_factor: float = 0.5,
                 step_adaptation: float = 1.5, adapt_window: int = 16,
                 source_step_convergence: float = 1e-7, init_trials: int = 100, starts: int = DEFAULT_STARTS,
                 compact_every: int = 10,
                 prior: str | None = None, lowfreq_ratio: float = 1 / 16, perlin_frequency: int = 6,
                 refine_after: int | str | None = DEFAULT_REFINE_AFTER, antithetic: bool = True,
                 scale_by_perturbation: float | None = None, source_by_perturbation: float | None = None,
                 surrogate: SurrogateSetting = None, surrogate_bias: float = 0.5,
                 backend: str = "ours", progress: bool = True) -> None:
        if steps is not None:  # None: ours runs until its query budget, foolbox 1,000 steps
            positive_int("steps", steps)
        elif backend == "foolbox":
            steps = FOOLBOX_STEPS
        if prior is None:  # ours: low-frequency proposals (bench/boundary.py: half the L2 of normal at 1,000 queries)
            prior = "normal" if backend == "foolbox" else DEFAULT_PRIOR
        if prior not in PRIORS:
            raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        if not is_real(lowfreq_ratio) or not 0 < lowfreq_ratio <= 1:
            raise ValueError(f"lowfreq_ratio must be in (0, 1] (coarse grid side / image side), got {lowfreq_ratio!r}")
        positive_int("perlin_frequency", perlin_frequency)
        if refine_after is not None and refine_after != "auto":  # None: one grid throughout
            positive_int("refine_after", refine_after)
        self.refine_after, self.antithetic = refine_after, check_bool("antithetic", antithetic)
        # ours: a fifth of each pixel's step follows the perturbation there, and the source step takes more off
        # where it is small; backend foolbox steps every pixel alike
        self.scale_by_perturbation = by_perturbation(
            "scale_by_perturbation", scale_by_perturbation, DEFAULT_SCALE_BY_PERTURBATION, backend, upper=1.0,
            rule="in [0, 1] (0: the same scale on every pixel)", foolbox="foolbox draws its own Gaussian noise")
        self.source_by_perturbation = by_perturbation(
            "source_by_perturbation", source_by_perturbation, DEFAULT_SOURCE_BY_PERTURBATION, backend,
            upper=math.inf, rule="a number >= 0 (0: the same source step on every pixel)",
            foolbox="foolbox steps every pixel toward the original alike")
        if backend == "foolbox" and prior != "normal":
            raise ValueError("prior must be normal with backend foolbox (foolbox draws its own Gaussian noise)")
        self.prior, self.lowfreq_ratio, self.perlin_frequency = prior, float(lowfreq_ratio), perlin_frequency
        if backend not in ("ours", "foolbox"):
            raise ValueError(f"backend must be 'ours' or 'foolbox', got {backend!r}")
        if candidates is None:  # foolbox evaluates one candidate per step; ours defaults to 2 per forward pass
            candidates = 1 if backend == "foolbox" else DEFAULT_CANDIDATES
        positive_int("candidates", candidates)
        if backend == "foolbox" and candidates != 1:
            raise ValueError(f"candidates must be 1 with backend foolbox (it evaluates one candidate per step), "
                             f"got {candidates}")
        if backend == "foolbox" and (max_queries is not None or target_l2 is not None or surrogate is not None):
            raise ValueError("max_queries, target_l2 and surrogate are not supported by backend foolbox; drop them "
                             "or use backend ours")
        if max_queries is None and backend == "ours":  # about 90 s for 4 ImageNet photos on a 2-core CPU
            max_queries = DEFAULT_MAX_QUERIES
        self.surrogate = surrogate_spec(surrogate)
        if not is_real(surrogate_bias) or not 0 <= surrogate_bias <= 1:
            raise ValueError(f"surrogate_bias must be in [0, 1] (0: the prior alone, 1: the surrogate's gradient "
                             f"alone), got {surrogate_bias!r}")
        self.surrogate_bias = float(surrogate_bias)
        positive_int("adapt_window", adapt_window)
        positive_int("init_trials", init_trials)
        positive_int("starts", starts)
        positive_int("compact_every", compact_every)
        if max_queries is not None:
            positive_int("max_queries", max_queries)
        if target_l2 is not None and not target_l2 > 0:
            raise ValueError(f"target_l2 must be > 0, got {target_l2}")
        # initial step sizes: foolbox's 0.01; ours starts at 0.05 (fewer wasted early steps at low budgets:
        # MobileNetV2, 8 foolbox photos, 1,000 queries, median L2 14.4 -> 11.6)
        first = FOOLBOX_FIRST_STEP if backend == "foolbox" else DEFAULT_FIRST_STEP
        spherical_step = first if spherical_step is None else spherical_step
        if backend == "ours" and source_step is not None:
            raise ValueError("source_step is backend foolbox's; backend ours sets the source step from the "
                             "orthogonal step (source_factor * spherical_step^2 / 2): drop it or set source_factor")
        if backend == "foolbox" and source_step is None:
            source_step = FOOLBOX_FIRST_STEP
        for name, value in (("spherical_step", spherical_step), ("source_step", source_step)):
            if value is not None and not 0 < value < 1:
                raise ValueError(f"{name} must be in (0, 1), got {value}")
        if not is_real(source_factor) or not source_factor > 0:
            raise ValueError(f"source_factor must be > 0 (the source step over spherical_step^2 / 2), "
                             f"got {source_factor!r}")
        if not step_adaptation > 1:
            raise ValueError(f"step_adaptation must be > 1, got {step_adaptation}")
        self.steps, self.candidates, self.max_queries, self.target_l2 = steps, candidates, max_queries, target_l2
        self.spherical_step, self.source_step, self.step_adaptation = spherical_step, source_step, step_adaptation
        self.source_factor, self.adapt_window = float(source_factor), adapt_window
        self.source_step_convergence, self.init_trials, self.starts = source_step_convergence, init_trials, starts
        self.compact_every, self.backend, self.progress = compact_every, backend, progress

    def params(self) -> dict[str, object]:
        return {k: describe(v) if k == "surrogate" else v for k, v in super().params().items() if k != "progress"}

    def prepare(self, model: nn.Module, shape: tuple[int, ...], device: torch.device) -> None:
        self._surrogate_on(model, shape, device)

    def _surrogate_on(self, model: nn.Module, shape: tuple[int, ...], device: torch.device) -> nn.Module | None:
        """The surrogate on `device`, loaded once and checked against the attacked model; None without one."""
        if self.surrogate is None:
            return None
        cached = getattr(self, "_surrogate", None)  # (device, model)
        if cached is None or cached[0] != device:
            cached = self._surrogate = (device, load_surrogate(self.surrogate, device, model))
        check_compatible(cached[1], model, shape)
        return cached[1]

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *,
            seed: int, starting_points: torch.Tensor | None) -> AttackResult:
        if self.backend == "foolbox":
            from advlab.attacks.boundary_foolbox import run_foolbox_boundary

            return run_foolbox_boundary(self, model, x, criterion, seed=seed, starting_points=starting_points)
        surrogate = self._surrogate_on(model, tuple(x.shape[1:]), x.device)
        with torch.no_grad():
            return self._run(model, x, criterion, seed, starting_points, surrogate)

    # ------------------------------------------------------------------ main loop
    def _run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, seed: int,
             starting_points: torch.Tensor | None, surrogate: nn.Module | None) -> AttackResult:
        n, shape = x.shape[0], x.shape[1:]
        flat = x.flatten(1).float()  # (N, D)
        keys = image_keys(x, seed)  # (N,)

        def judge(points: torch.Tensor, judged_by: Criterion) -> torch.Tensor:  # (M, D), M points' criterion -> (M,)
            return judged_by.is_adversarial(model(points.view(-1, *shape)))

        def is_adv(points: torch.Tensor, which: torch.Tensor) -> torch.Tensor:  # (M, D), (M,) image index -> (M,)
            return judge(points, criterion.subset(which))

        def bias(points: torch.Tensor, which: torch.Tensor) -> torch.Tensor | None:  # (A, D) -> (A, D) or None
            if surrogate is None:
                return None
            return gradient_directions(surrogate, points, criterion.subset(which), tuple(shape))

        adv, queries = initial_points(self, flat, keys, criterion, starting_points, is_adv, tuple(shape), surrogate)
        found = torch.isfinite(adv[:, 0])
        dist = torch.where(found, (adv - flat).norm(dim=1), torch.full_like(flat[:, 0], math.inf))
        zeros = torch.zeros(n, device=x.device)
        state = WalkState(index=torch.arange(n, device=x.device), x=flat, adv=torch.where(found[:, None], adv, flat),
                          dist=dist, keys=keys, spherical=torch.full_like(zeros, self.spherical_step),
                          source=source_step_for(self, torch.full_like(zeros, self.spherical_step)),
                          tries=zeros.clone(), hits=zeros.clone(), queries=queries, running=found & (dist > 0))
        out_adv, out_dist, out_queries = state.adv.clone(), state.dist.clone(), state.queries.clone()
        trace_q, trace_d = [out_queries.clone()], [out_dist.clone()]
        by_queries = self.max_queries is not None  # then the bar follows the median image's budget
        bar = tqdm(total=self.max_queries if by_queries else self.steps, desc="boundary",
                   unit="queries/image" if by_queries else "step", disable=not self.progress, leave=False)
        batch = CandidateBatch.of(state, criterion, self.candidates)
        for step in range(self.steps) if self.steps is not None else itertools.count():
            self._step(state, batch, step, judge, bias, tuple(shape))
            if (step + 1) % self.compact_every == 0 or step + 1 == self.steps:
                state.running &= state.source >= self.source_step_convergence  # converged: no step left
                out_adv[state.index], out_dist[state.index] = state.adv, state.dist
                out_queries[state.index] = state.queries
                trace_q.append(out_queries.clone())
                trace_d.append(out_dist.clone())
                active = int(state.running.sum())  # one host sync per compaction, not per step
                if self.progress:
                    bar.n = int(out_queries.float().median()) if by_queries else step + 1
                    median_l2 = median(out_dist)  # the usual median, as results.json reports it
                    bar.set_postfix(active=active, median_l2=f"{median_l2:.3g}" if median_l2 is not None else "-")
                if active == 0:
                    break
                state = state.select(state.running)
                batch = CandidateBatch.of(state, criterion, self.candidates)
        bar.close()
        x_adv = torch.where(torch.isfinite(out_dist)[:, None], out_adv, flat).view_as(x).to(x.dtype)
        return AttackResult(x_adv=x_adv, success=torch.isfinite(out_dist), queries=out_queries, distance=out_dist,
                            traces={"queries": torch.stack(trace_q), "l2": torch.stack(trace_d)})

    def _step(self, s: WalkState, batch: CandidateBatch, step: int, judge, bias, shape: tuple[int, ...]) -> None:
        """One proposal round for every active image: `candidates` proposals in one forward pass."""
        a, d, k = s.x.shape[0], s.x.shape[1], self.candidates
        if self.max_queries is not None:  # exact budget: an image stops before a step it cannot pay for
            s.running &= s.queries + k <= self.max_queries
        diff = s.adv - s.x  # (A, D), norm = dist
        unit = diff / s.dist.clamp_min(1e-12)[:, None]
        draws = (k + 1) // 2 if self.antithetic else k
        eta = proposals(self.prior, step_keys(s.keys, _STEP_STREAM, step), draws, shape, ratio=self.lowfreq_ratio,
                        frequency=self.perlin_frequency, level=grid_level(self, step, max(shape[1:])))  # (A, draws, D)
        if self.scale_by_perturbation:  # before mirroring: half the multiplies, the same bits
            eta = eta * perturbation_scale(diff, s.dist, self.scale_by_perturbation)[:, None]
        if self.antithetic:
            eta = mirrored(eta, k)  # (A, K, D)
        eta = eta - (eta * unit[:, None]).sum(-1, keepdim=True) * unit[:, None]  # orthogonal to diff
        eta = eta / eta.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # (A, K, D) unit directions
        grad = bias(s.adv, s.index)  # (A, D) surrogate gradient, or None
        if grad is not None:  # tilt every proposal toward the surrogate's adversarial direction (Brunner et al.)
            grad = grad - (grad * unit).sum(-1, keepdim=True) * unit
            grad = grad / grad.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            eta = (1 - self.surrogate_bias) * eta + self.surrogate_bias * grad[:, None]
            eta = eta / eta.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        eta = eta * (s.spherical * s.dist)[:, None, None]
        shrink = 1.0 / torch.sqrt(1.0 + s.spherical**2)  # back onto the sphere of radius dist
        on_sphere = diff[:, None] + eta  # (A, K, D), norm = dist * sqrt(1 + spherical^2)
        if self.source_by_perturbation:  # (A, 1, D): each pixel's own source step
            source = (s.source[:, None] * source_weights(diff, s.dist, self.source_by_perturbation)).clamp_(max=1.0)
            scale = (shrink[:, None] * (1.0 - source))[:, None]
        else:  # (A, 1, 1)
            scale = (shrink * (1.0 - s.source))[:, None, None]
        cand = (s.x[:, None] + on_sphere * scale).clamp_(0.0, 1.0)
        cand_ok = judge(cand.view(a * k, d), batch.candidates).view(a, k)
        s.queries += k * s.running
        s.tries += k * s.running
        s.hits += cand_ok.sum(1) * s.running
        cand_dist = torch.where(cand_ok, (cand - s.x[:, None]).norm(dim=-1), torch.full_like(cand_ok, math.inf,
                                                                                             dtype=s.dist.dtype))
        best_dist, best = cand_dist.min(dim=1)  # (A,)
        accept = (best_dist < s.dist) & s.running
        s.adv = torch.where(accept[:, None], cand[batch.rows, best], s.adv)
        s.dist = torch.where(accept, best_dist, s.dist)
        if self.target_l2 is not None:
            s.running &= s.dist > self.target_l2
        if window_may_be_full(self, step):
            adapt_step_sizes(self, s)


@register_companion("boundary")
class BoundaryRows(Companion):
    """A Boundary row's companion: what the attack knew, in its row."""

    def row_extras(self, attack: Attack, tag: str, run: Any, subject: Any, row: dict[str, Any], batch_size: int,
                   device: torch.device, arrays: Path) -> dict[str, Any]:
        """Top-1 decisions of the attacked model, and a surrogate's gradients if it had one."""
        knew = "top-1 decisions of the attacked model"
        surrogate = getattr(attack, "surrogate", None)
        if surrogate is not None:
            entry = describe(surrogate)
            knew += f"; input gradients of surrogate {entry['name']} ({entry.get('weights') or 'no weights'})"
        return {"knowledge": knew}
