"""DAG, Dense Adversary Generation (Xie, Wang, Zhang, Zhou, Xie & Yuille, "Adversarial Examples for
Semantic Segmentation and Object Detection", ICCV 2017), batched over images.

Every target (a pixel for segmentation; a region proposal, held fixed, for detection) has an
adversarial label. Each iteration, over the targets still active (not yet predicted as their
adversarial label):

    r = grad_x sum_active (z_adversarial - z_current)      (raw logits; z_current: the pixel's prediction)
    r = gamma * r / max|r|                                  (l_inf normalisation, per image)
    x_adv = clamp(x + sum of r, 0, 1)

An image stops once at most 1% (1 - `criterion.threshold`) of its *foreground* targets are still
active, as in the reference code (`fooling_seg_net.m`: pixels not at their target <= 1% of the
pixels whose original class is not background), or after `max_iterations` (None: the reference
code's 200 for segmentation, 150 for detection). `stop="all"` counts the 1% of all valid targets
instead (this lab's rule before; where objects cover a small share of the image it stops with much
of them untouched). For detection every target is a proposal on an object, so both rules coincide
(the reference code, `fooling_det_net.m`, goes on until no target keeps its original class).

`margin` (logits, default 0: the paper) makes a target count as done only once its adversarial
logit leads every other class by that much; until then it stays active, pushed against the best
other class. A decision exactly at the boundary (scores just under a detector's threshold) turns
back under a lower threshold; a margin keeps it turned. For detection the outputs are the box head's logits on the
fixed proposals (`criterion.evaluate`); box regression is not attacked. gamma is the
reference code's 0.5 in 0..255 pixel units: 0.5/255 here. Unlike the reference code (MATLAB/Caffe,
cihangxie/DAG) the result is clipped to the valid image range, and an optional l_inf budget `eps`
can bound it.

Batched on the device: every image has its own active set and stopping point; finished images leave
the batch at the next compaction (every `compact_every` iterations, the only host syncs); queries are
forward+backward passes per image. The paper's control, the same perturbation with its pixels
randomly permuted (which barely changes the prediction), is the row next to every DAG row.
"""
from __future__ import annotations

import hashlib
import tempfile
import weakref
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from tqdm.auto import tqdm

from advlab.attacks.universal import _feasible
from advlab.core.attack import Attack, AttackResult
from advlab.core.checks import check_bool, is_real, positive_int
from advlab.core.companion import Companion, Control, register_companion
from advlab.core.criteria import IGNORE, Criterion, ProposalTargets
from advlab.core.errors import AdvlabError
from advlab.core.images import ChunkImages, Images
from advlab.core.registry import register_attack
from advlab.core.rng import image_keys, step_keys, uniform

_PERMUTE_STREAM = 41  # advlab.core.rng stream of the permuted control
ITERATIONS_SEGMENTATION, ITERATIONS_DETECTION = 200, 150  # the reference code's MAX_ITER per task
STOP_RULES = ("foreground", "all")  # which targets the 1% of the stop rule counts


@register_attack("dag", threat="white-box", tasks={"segmentation", "detection"})
class DAG(Attack):
    """DAG (Xie et al., ICCV 2017): every pixel pushed to its adversarial label, l_inf-normalised gradient steps."""

    quick_settings: ClassVar[dict[str, Any]] = {"max_iterations": 200, "progress": False}

    norm = "linf"
    dense_targets: ClassVar[str] = "permutation"  # the task draws adversarial labels for it

    def __init__(self, *, gamma: float = 0.5 / 255, max_iterations: int | None = None, eps: float | None = None,
                 stop: str = "foreground", margin: float = 0.0, compact_every: int = 10,
                 progress: bool = True) -> None:
        if not is_real(gamma) or not 0 < gamma <= 1:
            raise ValueError(f"gamma must be a step in (0, 1] (pixels in [0, 1]; the paper's 0.5/255), got {gamma!r}")
        self.gamma = float(gamma)
        self.max_iterations = None if max_iterations is None else positive_int("max_iterations", max_iterations)
        if eps is not None and (not is_real(eps) or not 0 < eps <= 1):
            raise ValueError(f"eps must be an l_inf budget in (0, 1] or null, got {eps!r}")
        self.eps = None if eps is None else float(eps)
        if stop not in STOP_RULES:
            raise ValueError(f"stop must be one of {', '.join(STOP_RULES)} (foreground: the reference code's rule), "
                             f"got {stop!r}")
        self.stop = stop
        if not is_real(margin) or margin < 0:
            raise ValueError(f"margin must be a logit margin >= 0 (0: the paper's rule), got {margin!r}")
        self.margin = float(margin)
        self.compact_every = positive_int("compact_every", compact_every)
        self.progress = check_bool("progress", progress)

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in super().params().items() if k != "progress"}

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, seed: int,
            starting_points: torch.Tensor | None) -> AttackResult:
        n = x.shape[0]
        x0 = x.detach().float()  # (N, C, H, W)
        r_total = torch.zeros_like(x0)
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        trace = [torch.ones(n, device=x.device)]  # share of targets still active, per image
        live = torch.arange(n, device=x.device)  # images still in the batch, (A,)
        active_share = torch.ones(n, device=x.device)
        finished = torch.zeros(n, dtype=torch.bool, device=x.device)
        limit = self.max_iterations or (ITERATIONS_DETECTION if isinstance(criterion, ProposalTargets)
                                        else ITERATIONS_SEGMENTATION)
        bar = tqdm(total=limit, desc="dag", unit="it", disable=not self.progress, leave=False)
        crit = criterion  # the targets of the images still in the batch, re-cut at each compaction
        valid = crit.labels != IGNORE  # (A, *S), re-cut with it, as the two counts below (A,)
        total, counted = valid.flatten(1).sum(1).clamp_min(1), self._counted(crit)
        for it in range(limit):
            xa = (x0[live] + r_total[live]).clamp(0.0, 1.0).requires_grad_(True)  # (A, C, H, W)
            with torch.enable_grad():
                logits = crit.evaluate(model, xa.to(x.dtype)).float()  # (A, K, *S): pixels, or fixed proposals
                target = crit.labels.clamp(max=logits.shape[1] - 1).long()[:, None]  # (A, 1, *S) void masked below
                pred = logits.detach().argmax(dim=1)  # (A, *S)
                rival = pred  # where a target is still active without a margin, its rival is the prediction
                if self.margin > 0:  # with one, a target already at its label is pushed against the runner-up
                    others = logits.detach().scatter(1, target, -torch.inf)  # (A, K, *S) every class but the target
                    rival = torch.where(pred == crit.labels, others.argmax(dim=1), pred)
                z_adv, z_rival = logits.gather(1, target).squeeze(1), logits.gather(1, rival[:, None]).squeeze(1)
                done = pred == crit.labels if self.margin == 0 else (z_adv - z_rival).detach() >= self.margin
                active = ~done & valid  # (A, *S) not yet adversarial (by the margin)
                remaining = active.flatten(1).sum(1)  # (A,)
                share = remaining / total
                running = remaining > (1.0 - crit.threshold) * counted  # (A,) the DAG stopping rule
                objective = ((z_adv - z_rival) * active).sum()
                (grad,) = torch.autograd.grad(objective, xa)  # (A, C, H, W): each image's own gradient
            grad = _feasible(grad, xa.detach())  # components that would leave [0, 1] are wasted: drop them
            scale = self.gamma / grad.flatten(1).abs().amax(dim=1).clamp_min(1e-12)  # (A,) l_inf normalisation
            r = r_total[live] + grad * (scale * running)[:, None, None, None]
            if self.eps is not None:
                r = r.clamp(-self.eps, self.eps)
            r_total[live] = (x0[live] + r).clamp(0.0, 1.0) - x0[live]  # keep x + r inside the image range
            queries[live] += (~finished[live]).long()  # passes after an image finished (until compaction) are free
            finished[live] |= ~running
            active_share[live] = share
            trace.append(active_share.clone())
            bar.update(1)
            if (it + 1) % self.compact_every == 0:
                keep = running.nonzero().squeeze(1)  # the one host sync per compaction
                if keep.numel() == 0:
                    break
                live, crit = live[keep], crit.subset(keep)
                valid, total, counted = valid[keep], total[keep], counted[keep]
        bar.close()
        # queries count every forward+backward pass an image took part in, the pass that found it done included
        x_adv = (x0 + r_total).clamp(0.0, 1.0).to(x.dtype)
        self._remember(model, x, criterion, seed, x_adv, queries)
        empty = torch.zeros(n, device=x.device)
        return AttackResult(x_adv=x_adv, success=empty.bool(), queries=queries, distance=empty,
                            traces={"active": torch.stack(trace)})  # (T + 1, N)

    def _counted(self, criterion: Criterion) -> torch.Tensor:
        """(A,) the targets the stop rule's 1% is a share of: foreground ones (the reference code) or all."""
        return criterion.foreground() if self.stop == "foreground" else criterion.valid().sum(1)

    def _remember(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, seed: int, x_adv: torch.Tensor,
                  queries: torch.Tensor) -> None:
        """Keep each image's result for the permuted control, which runs next on the same model and
        images (keyed by the model, the seed and the image's pixels; targets compared on use). The
        adversarial images go to a temporary file per batch, read back memory-mapped: in memory the
        memo holds per image only its key, a digest of its targets and where its adversarial lies."""
        memo = getattr(self, "_memo", None)
        if memo is None or memo["model"]() is not model or memo["seed"] != seed:
            memo = self._memo = {"model": weakref.ref(model), "seed": seed, "images": {}, "files": 0,
                                 "dir": tempfile.TemporaryDirectory(prefix="advlab-dag-")}  # removed with the memo
        path = Path(memo["dir"].name) / f"batch-{memo['files']:06d}.pt"
        memo["files"] += 1
        torch.save(x_adv.detach().cpu(), path)  # (B, C, H, W)
        labels, spent = criterion.labels.cpu(), queries.tolist()  # one transfer, not per image
        for i, key in enumerate(image_keys(x, seed).tolist()):
            memo["images"][key] = (_digest(labels[i]), path, i, spent[i])

    def recall(self, model: nn.Module, x: torch.Tensor, criterion: Criterion,
               seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(x_adv, queries) of these images from the last run on this model and seed, or None if any is
        missing or had other targets."""
        memo = getattr(self, "_memo", None)
        if memo is None or memo["model"]() is not model or memo["seed"] != seed:
            return None
        found = [memo["images"].get(key) for key in image_keys(x, seed).tolist()]
        if any(f is None or f[0] != _digest(labels) for f, labels in zip(found, criterion.labels.cpu())):
            return None
        files: dict[Path, torch.Tensor] = {}
        for _, path, _, _ in found:
            if path not in files:
                files[path] = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        return (torch.stack([files[path][i] for _, path, i, _ in found]).to(x.device),
                torch.tensor([spent for *_, spent in found], dtype=torch.long, device=x.device))


def _digest(labels: torch.Tensor) -> bytes:
    """A digest of one image's targets (dtype, shape and values): equal digests, equal targets."""
    text = f"{labels.dtype}{tuple(labels.shape)}".encode()
    return hashlib.blake2b(text + labels.contiguous().numpy().tobytes(), digest_size=16).digest()


class PermutedDAG(Attack):
    """The paper's control for DAG: the same per-image perturbation with its pixels randomly permuted
    (the permutation keyed by the seed and the image), which should barely change the prediction.
    It reuses the DAG results of the row just run on the same model and images (no second DAG)."""

    norm = "linf"

    def __init__(self, source: DAG) -> None:
        self.source = source

    def params(self) -> dict[str, Any]:
        return {**self.source.params(), "control": "permuted perturbation"}

    @property
    def dense_targets(self) -> str:
        return self.source.dense_targets

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, seed: int,
            starting_points: torch.Tensor | None) -> AttackResult:
        remembered = self.source.recall(model, x, criterion, seed)  # the DAG row just ran on these images
        if remembered is None:  # e.g. a resume that loaded DAG's chunks from disk: run DAG again
            source = self.source(model, x, criterion, seed=seed)
            remembered = (source.x_adv, source.queries)
        x_src, queries = remembered
        r = permuted(x_src.float() - x.float(), x, seed)  # the DAG perturbation as applied, pixels permuted
        x_adv = (x.float() + r).clamp(0.0, 1.0).to(x.dtype)
        empty = torch.zeros(x.shape[0], device=x.device)
        return AttackResult(x_adv=x_adv, success=empty.bool(), queries=queries, distance=empty)



@register_companion("dag")
class DAGRows(Companion):
    """A DAG row's companion: its random control (the permuted perturbation) and, in runs with several
    models, the cross-model and cross-task table (every image's perturbation is kept for it)."""

    transfer_key: ClassVar[str] = "transfer_dag"  # results' key of the cross-model table
    keep_perturbations: ClassVar[bool] = True  # transfer() adds every image's perturbation to the other models' images

    def control(self, attack: Attack) -> Control:
        return Control(PermutedDAG(attack), "permuted",
                       "DAG perturbation with its pixels randomly permuted (Xie et al. 2017)", Companion(),
                       "permuted control")

    @classmethod
    def transfer(cls, subjects: list[Any], rows: list[tuple[int, dict[str, Any]]], run_dir: Path, batch_size: int,
                 device: torch.device) -> dict[str, Any] | None:
        """The paper's cross-network and cross-task tables (Xie et al. 2017, Tables 4 and 5): every
        model's DAG perturbations (x_adv - x per image) added to the same images for every model, a
        segmenter's to a detector's and back; matrix[i][j] = model j's own score (mIoU or mAP@0.5) on
        them, None where the images differ. After each perturbation, its random control: the same
        perturbation with its pixels permuted per image."""
        matrix, sources = [], []
        for m, row in rows:
            x = subjects[m].data.images  # (N, C, H, W): the images the row attacked
            delta = _perturbations(run_dir / row["perturbations_dir"], x.shape)  # (N, C, H, W), read on demand
            name = subjects[m].model.name
            for label, shuffle, source in ((f"DAG on {name}", False, name),
                                           (f"DAG on {name}, pixels permuted", True, None)):
                line = []
                for subject in subjects:
                    if not _same_images(subject.data.images, x, batch_size):
                        line.append(None)
                        continue
                    moved = Perturbed(x, delta, shuffle=shuffle)  # x + each image's perturbation (permuted)
                    adv = subject.task.predict(subject.model, moved, batch_size, device)
                    line.append(subject.task.score(adv, subject.labels))
                matrix.append(line)
                sources.append({"model": source, "label": label, "file": row["arrays"]})
        if not matrix:
            return None
        metrics = [s.task.score_name for s in subjects]
        return {"title": "Transfer of DAG perturbations",
                "description": "Each model's own score (columns: " + ", ".join(
                    f"{s.model.name} {metric}" for s, metric in zip(subjects, metrics)) + ") on the images "
                    "carrying the DAG perturbation made on each model (rows), and on the same perturbation with "
                    "its pixels permuted (the random control); bold: the model it was made on (Xie et al. "
                    "2017, Tables 4 and 5: across networks and across segmentation and detection). Lower "
                    "= the perturbation transfers.",
                "metric": metrics[0] if len(set(metrics)) == 1 else "mixed", "metrics": metrics,
                "models": [s.model.name for s in subjects],
                "clean": [s.task.score(s.clean, s.labels) for s in subjects],
                "perturbations": sources, "matrix": matrix}


class Perturbed(Images):
    """The images x carrying a DAG row's perturbations (`shuffle`: with their pixels permuted per
    image, the paper's control), computed batch by batch."""

    def __init__(self, x: Images, delta: Images, *, shuffle: bool) -> None:
        super().__init__(x.shape)
        self.x, self.delta, self.shuffle = x, delta, shuffle

    def read(self, index: torch.Tensor) -> torch.Tensor:
        x, delta = self.x[index], self.delta[index]  # (K, C, H, W) each
        return (x + (permuted(delta, x, 0) if self.shuffle else delta)).clamp(0.0, 1.0)


def _perturbations(folder: Path, shape: torch.Size) -> Images:
    """A row's perturbations (N, C, H, W) from its shard files (`advlab.run.rows.save_perturbations`),
    one shard memory-mapped at a time."""
    shards = sorted(folder.glob("shard-*.pt"))
    counts = [len(torch.load(f, map_location="cpu", weights_only=True, mmap=True)["delta"]) for f in shards]
    if sum(counts) != shape[0]:
        raise AdvlabError(f"{folder} holds {sum(counts)} perturbations for {shape[0]} images; run the attack again")
    return ChunkImages(shards, counts, shape[1:], key="delta")


def _same_images(images: Images, x: Images, batch_size: int) -> bool:
    """Are two image sets the same images (compared batch by batch)?"""
    return images.shape == x.shape and all(torch.equal(a, b) for a, b in zip(images.batches(batch_size),
                                                                             x.batches(batch_size)))


def permuted(r: torch.Tensor, x: torch.Tensor, seed: int) -> torch.Tensor:
    """(N, C, H, W) perturbations with their values randomly permuted per image, the permutation keyed
    by the seed and the image x's pixels (the paper's control)."""
    flat = r.flatten(1)  # (N, D)
    keys = step_keys(image_keys(x, seed), _PERMUTE_STREAM, 0)
    order = uniform(keys, (flat.shape[1],)).argsort(dim=1)  # (N, D) a random permutation per image
    return flat.gather(1, order).view_as(r)
