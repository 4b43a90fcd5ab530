"""Universal adversarial perturbations: one image-agnostic perturbation v, ||v|| <= eps, such that
x + v fools the classifier on most images x of a distribution.

- "deepfool" (Moosavi-Dezfooli, Fawzi, Fawzi & Frossard, "Universal adversarial perturbations",
  CVPR 2017, Algorithm 1): pass over the data X; for each image that x + v does not fool yet, find
  the minimal extra step dv that carries x + v across its nearest decision boundary with DeepFool
  (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep neural
  networks", CVPR 2016; the l2 version), then v <- P(v + dv), P the projection onto the eps-ball.
  Stop once the fooling ratio on X reaches 1 - delta, or after `max_passes`. Batched here: the
  DeepFool steps of a minibatch are computed in parallel against the same v and summed before the
  projection, v <- P(v + sum_i dv_i) (batch_size=1 is the paper's sequential loop).
- "sgd" (Shafahi, Najibi, Xu, Dickerson, Davis & Goldstein, "Universal adversarial training",
  AAAI 2020): projected stochastic gradient ascent on v of the minibatch mean of
  min(CE, loss_clip) (clipped so that already fooled images stop dominating the gradient), a
  signed step for l_inf and an l2-normalised one for l2; one epoch is one pass, same stopping rule.
- "random": the paper's baseline, a random v on the eps-sphere (uniform random signs times eps for
  l_inf, a Gaussian direction scaled to l2 norm eps). The control row next to a solved v draws it at
  the norm of the v found, which a solver may leave well inside the eps-ball.

Fooling: the criterion's labels are the classes v must move images away from (the runner passes
the clean predictions, so fooling ratio = share of images whose predicted label changes); with a
`Targeted` criterion v pushes every image toward the target class instead. `perturbation=FILE`
skips solving and applies a saved v (see `save_perturbation` / `load_perturbation`).

All randomness (pass order, random v) comes from a CPU generator seeded with the run seed alone (v is
one object for the whole set: same seed, same data, same v on any device), never the global RNG;
gradients are taken with respect to v or the images only, never the model's parameters. Gradients
are taken at the clamped images and reduced to their feasible part (`_feasible`): autograd through
clamp is 0 for pixels exactly at 0 or 1, which would freeze e.g. the all-zero Fashion-MNIST background.

Algorithm 1 assumes per-image DeepFool steps much smaller than eps (ImageNet in the paper). Where they
are about as large as the ball (the lab's Fashion-MNIST CNN at l2 eps = 3: median step ~1.0, 90th
percentile ~2.4), each update all but replaces v and the fooling ratio jumps from pass to pass, with
batch_size=1 as with the batched sum; the SGD solver does not have that problem.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from advlab.core import atomic, distributed
from advlab.core.attack import Attack, AttackResult, SetResult
from advlab.core.checks import check_bool, check_choice, is_real, positive_int
from advlab.core.companion import Companion, Control, register_companion
from advlab.core.criteria import Criterion, Targeted
from advlab.core.errors import AdvlabError
from advlab.core.images import Images, TensorImages
from advlab.core.norms import NORMS
from advlab.core.registry import register_attack

SOLVERS = ("deepfool", "sgd", "random")


@register_attack("universal", threat="white-box", tasks={"classification"})
class UniversalPerturbation(Attack):
    """Universal adversarial perturbation (Moosavi-Dezfooli et al., CVPR 2017): one v fools most images."""

    quick_settings: ClassVar[dict[str, Any]] = {"solver": "deepfool", "norm": "l2", "eps": 3.0, "delta": 0.0,
                                                    "batch_size": 1, "progress": False}

    norm = "linf"  # the default of the `norm` setting; each instance overrides it with its own
    universal: ClassVar[bool] = True  # the runner calls `attack_set` on the whole data set, streamed, not chunks
    collective: ClassVar[bool] = True  # under torchrun the ranks share each minibatch and sum v's gradient
    path_settings: ClassVar[tuple[str, ...]] = ("perturbation",)

    def __init__(self, *, solver: str = "sgd", norm: str = "linf", eps: float = 10 / 255, max_passes: int = 5,
                 delta: float = 0.2, overshoot: float = 0.02, candidate_classes: int = 10, deepfool_steps: int = 50,
                 batch_size: int = 128, step_size: float | None = None, loss_clip: float = 9.0,
                 perturbation: str | None = None, progress: bool = True) -> None:
        self.solver = check_choice("solver", solver, SOLVERS)
        self.norm = check_choice("norm", norm, tuple(NORMS))  # type: ignore[misc]  # instance overrides the ClassVar
        self.eps = NORMS[norm].check_eps(eps)
        self.max_passes = positive_int("max_passes", max_passes)
        if not is_real(delta) or not 0 <= delta < 1:
            raise ValueError(f"delta must be a number in [0, 1) (target fooling ratio 1 - delta), got {delta!r}")
        if not is_real(overshoot) or not 0 <= overshoot < math.inf:
            raise ValueError(f"overshoot must be a number >= 0, got {overshoot!r}")
        self.delta, self.overshoot = float(delta), float(overshoot)
        if not isinstance(candidate_classes, int) or isinstance(candidate_classes, bool) or candidate_classes < 2:
            raise ValueError(f"candidate_classes must be an integer >= 2 (the label and one other), "
                             f"got {candidate_classes!r}")
        self.candidate_classes = candidate_classes
        self.deepfool_steps = positive_int("deepfool_steps", deepfool_steps)
        self.batch_size = positive_int("batch_size", batch_size)
        if step_size is None:
            step_size = self.eps / 10 if norm == "linf" else self.eps / 5
        elif not is_real(step_size) or not 0 < step_size < math.inf:
            raise ValueError(f"step_size must be a positive number (or None for eps/10 linf, eps/5 l2), "
                             f"got {step_size!r}")
        self.step_size = float(step_size)
        if not is_real(loss_clip) or not loss_clip > 0:
            raise ValueError(f"loss_clip must be a positive number (inf: no clipping), got {loss_clip!r}")
        self.loss_clip = float(loss_clip)
        if perturbation is not None:
            if not isinstance(perturbation, (str, os.PathLike)) or not Path(perturbation).is_file():
                raise ValueError(f"perturbation must be the path of a saved perturbation file, got {perturbation!r}"
                                 " (no such file)")
            perturbation = str(perturbation)
        self.perturbation = perturbation
        self.progress = check_bool("progress", progress)
        self._matches: dict[str, Any] | None = None  # a control: the norm it matches (`matched_control`)

    def matched_control(self, v: torch.Tensor) -> UniversalPerturbation | None:
        """A random v of the same norm as `v` (C, H, W) in this attack's norm (None for v = 0)."""
        size = float(NORMS[self.norm].size(v[None])[0])
        if not size > 0:
            return None
        baseline = type(self)(**{**self.params(), "solver": "random", "eps": size, "progress": False})
        baseline._matches = {"norm": self.norm, "perturbation_norm": size, "eps": self.eps}
        return baseline

    @property
    def matches(self) -> dict[str, Any] | None:
        """A control's record of what it matches: its norm, the size it was drawn at, the budget of the v."""
        return self._matches

    def params(self) -> dict[str, Any]:
        """The settings that shaped the result: with a loaded `perturbation` the solver settings are
        ignored, so only the file and the evaluation batch size are recorded."""
        if self.perturbation is not None:
            return {"perturbation": self.perturbation, "batch_size": self.batch_size}
        return {k: v for k, v in super().params().items() if k not in ("progress", "perturbation")}

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *,
            seed: int, starting_points: torch.Tensor | None) -> AttackResult:
        """One v for all of x (N, C, H, W); x_adv = clamp(x + v). extras as `attack_set`."""
        x0 = x.detach().float()  # (N, C, H, W), the working precision
        found = self.attack_set(model, TensorImages(x0), criterion, seed=seed, device=x.device, dtype=x.dtype)
        x_adv = self.adversarial(found.extras)(x0).to(x.dtype)  # (N, C, H, W)
        empty = torch.zeros(x0.shape[0], device=x.device)
        return AttackResult(x_adv=x_adv, success=found.success, queries=found.queries, distance=empty,
                            extras=found.extras)

    def attack_set(self, model: nn.Module, x: Images, criterion: Criterion, *, seed: int, device: torch.device,
                   dtype: torch.dtype = torch.float32) -> SetResult:
        """One v for all images of `x` (N, C, H, W), streamed: minibatches are read as the solver needs
        them, so the set need not fit in memory. extras: "perturbation" v (C, H, W), "fooling_trace"
        (passes + 1,) on CPU: the fooling ratio at v = 0 and after each pass (for "random" or a loaded
        v, no pass: just the ratio of that v), "passes". queries (N,): model evaluations per image (a
        forward, or a forward and its backward passes, counts 1); success (N,): x + v is adversarial."""
        generator = torch.Generator().manual_seed(seed)  # set-level draws: keyed by the seed alone
        criterion = criterion.to(device)
        queries = torch.zeros(len(x), dtype=torch.long, device=device)
        passes = 0
        if self.perturbation is not None or self.solver == "random":  # no solving: trace = [ratio of v]
            v = self._loaded(x.shape[1:], device) if self.perturbation is not None else \
                random_perturbation(tuple(x.shape[1:]), self.norm, self.eps, generator).to(device)
            fooled = self._fooled(model, x, v, criterion, dtype, device)
            trace = [fooled.float().mean()]
            queries += 1
        else:
            v, fooled, trace, passes = self._solve(model, x, criterion, generator, queries, dtype, device)
        extras = {"perturbation": v.float(), "fooling_trace": torch.stack(trace).float().cpu(), "passes": passes}
        return SetResult(success=fooled, queries=queries, extras=extras)

    def adversarial(self, extras: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The images' map to their adversarials, from what `attack_set` returned: x -> clamp(x + v)."""
        v = extras["perturbation"]  # (C, H, W)
        return lambda x: (x + v.to(x.device)).clamp(0.0, 1.0)

    # ------------------------------------------------------------ solvers
    def _solve(self, model: nn.Module, x: Images, criterion: Criterion, generator: torch.Generator,
               queries: torch.Tensor, dtype: torch.dtype,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], int]:
        """Algorithm 1's outer loop. Returns (v (C, H, W), fooled (N,) at v, fooling ratio after each
        pass, passes run)."""
        n = len(x)
        targeted = isinstance(criterion, Targeted)
        v = torch.zeros(x.shape[1:], device=device)  # (C, H, W)
        fooled = self._fooled(model, x, v, criterion, dtype, device)
        trace = [fooled.float().mean()]
        queries += 1
        bar = tqdm(total=self.max_passes, desc=f"universal/{self.solver}", unit="pass", disable=not self.progress,
                   leave=False)
        passes = 0
        while passes < self.max_passes and float(trace[-1]) < 1 - self.delta:
            order = torch.randperm(n, generator=generator)  # (N,) on the CPU, where images are read
            batches = list(order.split(self.batch_size))  # (B,) each
            shares = [b[distributed.mine(torch.arange(len(b)))] for b in batches]  # this rank's part of each
            for batch, idx, xb in zip(batches, shares, x.groups(shares, pin=device.type == "cuda")):
                xb, batch, idx = xb.to(device), batch.to(device), idx.to(device)  # (b, C, H, W), (B,), (b,)
                labels = criterion.labels[idx]
                if self.solver == "deepfool":
                    dv, q = deepfool(model, xb + v, labels, targeted=targeted, candidates=self.candidate_classes,
                                     steps=self.deepfool_steps, overshoot=self.overshoot, dtype=dtype)
                    spent = torch.zeros_like(queries).index_put_((idx,), q.to(queries.dtype))
                    v = NORMS[self.norm].shrink(v + distributed.summed(dv.sum(dim=0)), self.eps)  # v + sum_i dv_i
                    queries += distributed.summed(spent)
                else:
                    v = self._sgd_step(model, xb, criterion.subset(idx), v, dtype, len(batch))
                    queries[batch] += 1
            passes += 1
            fooled = self._fooled(model, x, v, criterion, dtype, device)
            trace.append(fooled.float().mean())
            queries += 1
            bar.update(1)
            bar.set_postfix(fooling=f"{float(trace[-1]):.3f}")
        bar.close()
        return v, fooled, trace, passes

    def _sgd_step(self, model: nn.Module, xb: torch.Tensor, criterion: Criterion, v: torch.Tensor,
                  dtype: torch.dtype, batch: int) -> torch.Tensor:
        """One projected ascent step on the minibatch mean of the criterion's loss, clipped at
        `loss_clip` (untargeted CE; a targeted loss is minus the target's CE, never above 0). Under
        torchrun each rank holds a share `xb` of the `batch` images and the gradients of v are summed
        across ranks (the DDP pattern), so every rank takes the same step."""
        p = (xb + v).clamp(0.0, 1.0).requires_grad_(True)  # (b, C, H, W), the images the model sees
        with torch.enable_grad():
            logits = model(p.to(dtype)).float()  # (b, K)
            objective = criterion.loss(logits).clamp(max=self.loss_clip).sum() / batch
            (grad,) = torch.autograd.grad(objective, p)  # (b, C, H, W)
        grad = distributed.summed(_feasible(grad, p).sum(dim=0))  # (C, H, W), d objective / d v through the box
        direction = NORMS[self.norm].steepest(grad[None])[0]
        return NORMS[self.norm].shrink(v.detach() + self.step_size * direction, self.eps)

    @torch.no_grad()
    def _fooled(self, model: nn.Module, x: Images, v: torch.Tensor, criterion: Criterion, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
        """(N,) bool: is clamp(x + v) adversarial, evaluated in batches of batch_size (under torchrun,
        each rank its batches, then shared)."""
        fooled = torch.zeros(len(x), dtype=torch.long, device=device)
        batches = torch.arange(len(x)).split(self.batch_size)
        ours = [b for k, b in enumerate(batches) if distributed.mine(k)]
        for idx, xb in zip(ours, x.groups(ours, pin=device.type == "cuda")):
            batch = slice(int(idx[0]), int(idx[-1]) + 1)
            logits = model((xb.to(device) + v).clamp(0.0, 1.0).to(dtype)).float()  # (B, K)
            fooled[batch] = criterion.subset(batch).is_adversarial(logits).long()
        return distributed.summed(fooled).bool()

    def _loaded(self, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        v, _ = load_perturbation(self.perturbation)  # type: ignore[arg-type]
        if tuple(v.shape) != tuple(shape):
            raise AdvlabError(f"perturbation {self.perturbation} has shape {tuple(v.shape)} but the images are "
                              f"{tuple(shape)}; compute one for this input size (or set --input-size)")
        return v.to(device)  # applied as saved: eps does not apply to it


# ---------------------------------------------------------------- functional core
def deepfool(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, targeted: bool = False,
             candidates: int = 10, steps: int = 50, overshoot: float = 0.02,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched l2 DeepFool (Moosavi-Dezfooli et al., CVPR 2016) from points x (B, C, H, W), possibly
    outside [0, 1]: the model sees clamp(x + (1 + overshoot) r). Untargeted: leave `labels` (B,) for
    the nearest linearised boundary among the top `candidates` classes at x other than the label;
    targeted: reach `labels`, linearised against the current top class. Images already adversarial
    get r = 0; an image stops once it crosses; at most `steps` updates, and an image still on its
    side after them gets r = 0 (the authors' code adds only converged DeepFool steps to v).

    Returns (dv (B, C, H, W) = (1 + overshoot) r, evaluations (B,) int64: forwards (+ backwards) per image)."""
    b = x.shape[0]
    r = torch.zeros_like(x)  # (B, C, H, W), accumulated before the overshoot
    evals = torch.zeros(b, dtype=torch.long, device=x.device)
    live = torch.arange(b, device=x.device)  # images not yet across, (A,)
    cand = labels[:, None]  # (B, M): classes to reach
    for it in range(steps + 1):
        z = (x[live] + (1 + overshoot) * r[live]).clamp(0.0, 1.0).requires_grad_(True)  # (A, C, H, W)
        with torch.enable_grad():
            logits = model(z.to(dtype)).float()  # (A, K)
        evals[live] += 1
        lab, pred = labels[live], logits.detach().argmax(dim=1)  # (A,), (A,)
        keep = pred != lab if targeted else pred == lab  # (A,) still on the source side
        if it == 0 and not targeted:  # top classes at x except the label, ranked once
            m = min(candidates, logits.shape[1]) - 1
            cand = logits.detach().scatter(1, lab[:, None], -math.inf).topk(m, dim=1).indices  # (B, M)
        if it == steps:  # out of steps: as in the authors' code, an image that did not cross adds nothing
            r[live[keep]] = 0
            break
        if not bool(keep.any()):
            break
        src = pred if targeted else lab  # (A,) the class to leave
        f = logits.gather(1, cand[live]) - logits.gather(1, src[:, None])  # (A, M), < 0 on the source side
        best_dist = torch.full((live.shape[0],), math.inf, device=x.device)  # (A,)
        best_w = torch.zeros_like(z).flatten(1)  # (A, D)
        best_f = torch.zeros_like(best_dist)
        for j in range(f.shape[1]):  # one backward per candidate class, all images at once
            (w,) = torch.autograd.grad(f[:, j].sum(), z, retain_graph=j + 1 < f.shape[1])
            w = _feasible(w, z).flatten(1)  # (A, D), gradient of f_k - f_src per image
            fj = f[:, j].detach().abs()
            dist = fj / w.norm(dim=1).clamp_min(1e-12)  # (A,) distance to the linearised boundary
            closer = dist < best_dist
            best_dist = torch.where(closer, dist, best_dist)
            best_w = torch.where(closer[:, None], w, best_w)
            best_f = torch.where(closer, fj, best_f)
        wn = best_w.norm(dim=1).clamp_min(1e-12)  # (A,)
        step = ((best_f / wn + 1e-4) / wn)[:, None] * best_w  # (A, D): DeepFool's r_i, +1e-4 to cross
        live = live[keep]
        r[live] += step[keep].view_as(r[live])
    return (1 + overshoot) * r, evals


def _feasible(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The feasible part of an ascent direction g (N, C, H, W) at images z in [0, 1]: components that
    would push a pixel at 0 down or at 1 up are zeroed, the others kept, boundary pixels included."""
    return torch.where(((z <= 0) & (g < 0)) | ((z >= 1) & (g > 0)), torch.zeros_like(g), g)


def random_perturbation(shape: tuple[int, ...], norm: str, eps: float, generator: torch.Generator) -> torch.Tensor:
    """The random baseline (C, H, W) on the eps-sphere, drawn with `generator` on its own device."""
    dev = generator.device
    if norm == "linf":
        return (torch.randint(0, 2, shape, generator=generator, device=dev).float() * 2 - 1) * eps
    d = torch.randn(shape, generator=generator, device=dev)
    return d * (eps / d.norm().clamp_min(1e-12))


def save_perturbation(path: str | os.PathLike, v: torch.Tensor, meta: dict[str, Any] | None = None) -> None:
    """Save v (C, H, W) as {"perturbation": v (CPU float32), **meta}; meta holds plain values
    (str, numbers, lists) so that `torch.load(weights_only=True)` reads it back."""
    if not isinstance(v, torch.Tensor) or v.dim() != 3:
        raise ValueError(f"v must be a (C, H, W) tensor, got {getattr(v, 'shape', type(v).__name__)}")
    meta = dict(meta or {})
    if "perturbation" in meta:
        raise ValueError("meta must not contain the key 'perturbation'")
    atomic.save_tensors({"perturbation": v.detach().float().cpu(), **meta}, Path(path))


def load_perturbation(path: str | os.PathLike) -> tuple[torch.Tensor, dict[str, Any]]:
    """Read a file of `save_perturbation` (or a bare (C, H, W) tensor): (v float32 CPU, meta)."""
    obj = atomic.read_tensors(Path(path), "perturbation file", "give a file written by a universal run "
                              "(arrays/universal-K.perturbation.pt)")
    if isinstance(obj, dict) and isinstance(obj.get("perturbation"), torch.Tensor):
        v, meta = obj["perturbation"], {k: val for k, val in obj.items() if k != "perturbation"}
    elif isinstance(obj, torch.Tensor):
        v, meta = obj, {}
    else:
        raise AdvlabError(f"perturbation file {path} holds {type(obj).__name__}, not a tensor or a dict with a "
                          "'perturbation' tensor")
    if v.dim() != 3 or not v.is_floating_point():
        raise AdvlabError(f"perturbation in {path} must be a (C, H, W) float tensor, got {tuple(v.shape)} {v.dtype}")
    return v.float(), meta


def perturbation_png(path: str | os.PathLike, v: torch.Tensor) -> None:
    """Write v (C, H, W), C = 1 or 3, as a viewable PNG: gray 0.5 is zero, +-max|v| maps to 1 and 0."""
    from PIL import Image

    v = v.detach().float().cpu()
    if v.dim() != 3 or v.shape[0] not in (1, 3):
        raise ValueError(f"v must be (1, H, W) or (3, H, W), got {tuple(v.shape)}")
    img = (0.5 + 0.5 * v / v.abs().max().clamp_min(1e-12)).clamp(0, 1).mul(255).round().to(torch.uint8)
    Image.fromarray(img[0].numpy() if v.shape[0] == 1 else img.permute(1, 2, 0).contiguous().numpy()).save(Path(path))


@register_companion("universal")
class UniversalRows(Companion):
    """A universal row's companion: the saved perturbation, its fooling trace and held-out results in the
    row; next to every solved v, the paper's baseline, a random v of the same norm as the v found (not of
    eps: a solver may stop well inside the ball); in runs with several models, every model's perturbation
    on every model (Moosavi-Dezfooli et al. 2017, Table 2)."""

    def __init__(self) -> None:
        self.found: torch.Tensor | None = None  # the v of the last row (C, H, W), for the control of its norm

    def row_extras(self, attack: Attack, tag: str, run: Any, subject: Any, row: dict[str, Any], batch_size: int,
                   device: torch.device, arrays: Path) -> dict[str, Any]:
        """The saved perturbation (.pt, PNG), its size, the per-pass fooling trace, held-out results; a
        control row adds `control_matches`: the norm it was drawn at and the budget of the v it matches."""
        from advlab.attacks.universal_eval import universal_summary  # it imports this module

        assert isinstance(attack, UniversalPerturbation)
        self.found = run.extras["perturbation"].float().cpu()
        out = universal_summary(tag, attack, run.extras, subject.model, subject.held_out, row, batch_size, device,
                                arrays)
        return {**out, "control_matches": attack.matches} if attack.matches is not None else out

    def control(self, attack: Attack) -> Control | None:
        assert isinstance(attack, UniversalPerturbation)
        if attack.solver == "random" or attack.perturbation is not None or self.found is None:
            return None
        baseline = attack.matched_control(self.found)
        if baseline is None:
            return None
        return Control(baseline, "random", "random perturbation of the same norm (Moosavi-Dezfooli et al. 2017)",
                       UniversalRows(), "random baseline")

    @classmethod
    def transfer(cls, subjects: list[Any], rows: list[tuple[int, dict[str, Any]]], run_dir: Path, batch_size: int,
                 device: torch.device) -> dict[str, Any] | None:
        """Every model's perturbations on every model (Moosavi-Dezfooli et al. 2017, Table 2)."""
        from advlab.attacks.universal_eval import transfer_matrix

        sources = [(m, row) for m, row in rows if "perturbation_file" in row]
        return transfer_matrix(subjects, sources, run_dir, batch_size, device) if sources else None
