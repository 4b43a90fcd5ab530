"""Attack rows of results.json: one attack on one subject (a model, or a defended model, with its
data and clean predictions), planned and measured by the subject's task, built once with its
context (setting, defense, model) and whatever the attack's companion adds (`Companion.row_extras`)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlab.core import atomic
from advlab.core.attack import Attack
from advlab.core.companion import Companion
from advlab.core.config import AttackSpec, RunConfig
from advlab.core.criteria import Targeted
from advlab.core.images import Images, Replaced, as_images
from advlab.core.registry import get_attack
from advlab.run.binarization import binarization_test
from advlab.run.chunks import TRACE, attack_in_chunks
from advlab.run.randomised import right_shares
from advlab.tasks import Subject

REPORT_IMAGES = 64  # images per row whose x / x_adv arrays/<tag>.pt keeps (the report shows the first 12)
ADVERSARIAL_SHARD = 1000  # images per uint8 file of --save-adversarials
PERTURBATION_SHARD = 64  # images per float32 file of an attack's kept perturbations (keep_perturbations)
RULE = ("randomised model: each image's verdict is the share of its k predictions that are right; an attack's "
        "accuracy is their mean (the mean of the k rounds' accuracies, spread over the rounds); the worst case "
        "takes per image the smallest share any attack left")
SAMPLES_IN_RESULTS = 1000  # per-image records kept in results.json; all of them go to a sidecar beyond this


def _samples(records: list[dict[str, Any]], arrays: Path, tag: str) -> dict[str, Any]:
    """The row's `samples`: every record, or beyond SAMPLES_IN_RESULTS the first ones, with all of them
    in arrays/<tag>.samples.jsonl (one JSON object per line), so results.json and the report stay small."""
    if len(records) <= SAMPLES_IN_RESULTS:
        return {"samples": records}
    arrays.mkdir(parents=True, exist_ok=True)
    atomic.write_text(arrays / f"{tag}.samples.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    return {"samples": records[:SAMPLES_IN_RESULTS], "samples_total": len(records),
            "samples_file": f"arrays/{tag}.samples.jsonl"}


@dataclass(frozen=True)
class RowContext:
    """Where a row was measured: stated once, when the row is built."""

    setting: str = "plain model"  # "plain model" | "defended model (adaptive)"
    defense: str | None = None
    defense_variant: str | None = None
    adaptive: str | None = None  # "exact" | "bpda" for adaptive rows
    model: str | None = None  # the model's name, in runs with several models

    def keys(self) -> dict[str, Any]:
        keys: dict[str, Any] = {"defense": self.defense, "adaptive": self.adaptive, "setting": self.setting}
        if self.defense is not None:
            keys["defense_variant"] = self.defense_variant
        if self.model is not None:
            keys["model"] = self.model
        return keys


@dataclass
class Outcome:
    """An attack row of results.json and the tensors later stages need (defense evaluation)."""

    row: dict[str, Any]
    x_adv: Images  # (N, C, H, W), read on demand; the clean image where the attack did not run
    won: torch.Tensor  # (N,) bool, attacked and successful
    adv: Any  # the subject's task predictions on x_adv
    dist: dict[str, torch.Tensor]  # norm -> (N,) distance of x_adv from x (0 where the attack did not run)
    parts: list[tuple[str, torch.Tensor, str]] = field(default_factory=list)  # (label, fooled (N,), threat)
    # (N,) float: the task's verdict on x_adv, 1/0, or a randomised subject's share of right predictions; None
    # for a task without a per-image verdict
    right: torch.Tensor | None = None


@dataclass(frozen=True)
class BareRow:
    """One attack of a run on the bare model, as the defenses read it: its matrix label, its files' tag, its
    spec, the attack with its companion, and its outcome."""

    label: str
    tag: str
    spec: AttackSpec
    attack: Attack
    companion: Companion
    outcome: Outcome


def skipped_row(spec: AttackSpec, attack: Attack, subject: Subject, context: RowContext, reason: str) -> dict[str, Any]:
    """The row of an attack that could not run on this subject (e.g. a gradient attack on a model without
    gradients): its settings and `skipped`, why; no outcome, so it counts in no matrix."""
    task = subject.task
    return {"method": spec.method, "backend": getattr(attack, "backend", "ours"), **context.keys(),
            "threat": get_attack(spec.method).threat, "task": task.name,
            "criterion": "targeted" if spec.target_class is not None else "untargeted",
            "target_class": spec.target_class, "starting_image": spec.starting_image, "params": attack.params(),
            f"clean_{task.score_name}": task.score(subject.clean, subject.labels), "queries_total": 0, "wall_s": 0.0,
            "chunk_ranks": [], "skipped": reason}


def save_adversarials(x_adv: Images, names: list[str], arrays: Path, tag: str) -> str:
    """Every adversarial image as uint8, written as it is read: arrays/<tag>.adversarials/shard-KKKKK.pt
    with `x_adv` (B, C, H, W) uint8 and `names`, ADVERSARIAL_SHARD images each; the folder, relative
    to the run directory."""
    folder = arrays / f"{tag}.adversarials"
    folder.mkdir(parents=True, exist_ok=True)
    for k, x in enumerate(x_adv.batches(ADVERSARIAL_SHARD)):
        first = k * ADVERSARIAL_SHARD
        atomic.save_tensors({"x_adv": (x * 255).round().to(torch.uint8), "names": names[first:first + len(x)]},
                            folder / f"shard-{k:05d}.pt")
    return f"arrays/{folder.name}/"


def save_perturbations(x: Images, x_adv: Images, arrays: Path, tag: str) -> str:
    """Every image's perturbation x_adv - x (float32, exact), written as it is read, for an attack's
    `transfer`: arrays/<tag>.perturbations/shard-KKKKK.pt with `delta` (B, C, H, W), PERTURBATION_SHARD
    images each; the folder, relative to the run directory."""
    folder = arrays / f"{tag}.perturbations"
    folder.mkdir(parents=True, exist_ok=True)
    for k, (clean, adv) in enumerate(zip(x.batches(PERTURBATION_SHARD), x_adv.batches(PERTURBATION_SHARD))):
        atomic.save_tensors({"delta": adv - clean}, folder / f"shard-{k:05d}.pt")
    return f"arrays/{folder.name}/"


def run_attack(tag: str, spec: AttackSpec, attack: Attack, companion: Companion, subject: Subject, cfg: RunConfig,
               device: torch.device, arrays: Path, context: RowContext = RowContext()) -> list[Outcome]:
    """The rows of one attack: its own, then its companion's control (e.g. a universal attack's random
    baseline)."""
    outcomes = [attack_row(tag, spec, attack, companion, subject, cfg, device, arrays, context)]
    control = companion.control(attack)
    if control is not None:
        outcomes.append(attack_row(f"{tag}-{control.tag}", spec, control.attack, control.companion, subject, cfg,
                                   device, arrays, context, baseline=control.baseline, control=control.label))
    return outcomes


def attack_row(tag: str, spec: AttackSpec, attack: Attack, companion: Companion, subject: Subject, cfg: RunConfig,
               device: torch.device, arrays: Path, context: RowContext = RowContext(), *,
               baseline: str | None = None, control: str | None = None) -> Outcome:
    model, data, task = subject.model, subject.data, subject.task
    plan = task.plan(spec, attack, subject, device, seed=cfg.seed)
    index = plan.attacked.nonzero().squeeze(1)
    starting = as_images(plan.starting_points).subset(index) if plan.starting_points is not None else None
    run = attack_in_chunks(attack, model, data.images.subset(index), plan.criterion.subset(index),
                           starting_points=starting, batch_size=cfg.batch_size,
                           device=device, seed=cfg.seed, chunk_dir=arrays / f"{tag}.chunks")
    x_adv = Replaced(data.images, index, run.x_adv)  # (N, C, H, W) on demand: the clean image where not attacked
    success = torch.zeros(len(data), dtype=torch.bool)
    success[index] = run.success
    queries = torch.zeros(len(data), dtype=torch.long)
    queries[index] = run.queries
    adv = task.predict(model, x_adv, cfg.batch_size, device)
    shares = right_shares(task, model, x_adv, subject.labels, subject.predictions, cfg.batch_size, device,
                          first=adv) if subject.predictions > 1 else None  # a randomised model: over k predictions
    correct = task.correct(adv, subject.labels)
    right = shares[0] if shares is not None else correct.float().cpu() if correct is not None else None
    dist = {norm: torch.zeros(len(data)).index_put_((index,), d)  # (N,) per norm, 0 where not attacked
            for norm, d in run.distances.items()}
    targeted = isinstance(plan.criterion, Targeted)
    row: dict[str, Any] = {
        "method": spec.method, "backend": getattr(attack, "backend", "ours"), **context.keys(),
        "threat": get_attack(spec.method).threat, "task": task.name,
        "criterion": "targeted" if targeted else "untargeted",
        "target_class": spec.target_class if spec.target_class is not None else
        int(plan.criterion.labels[0]) if targeted and plan.criterion.labels.dim() == 1 else None,
        "starting_image": spec.starting_image, "params": attack.params(),
        f"clean_{task.score_name}": task.score(subject.clean, subject.labels),
        **task.metrics(subject, plan, adv, success, queries, dist),
        "queries_total": int(queries.sum()),  # 0 where not attacked
        "wall_s": run.wall_s, "chunk_ranks": run.ranks,  # which torchrun rank computed each chunk
    }
    row["model_images_per_s"] = row["queries_total"] / run.wall_s if run.wall_s > 0 else None
    row["arrays"] = f"arrays/{tag}.pt"
    row |= _samples(task.samples(subject, plan, adv, success, queries, dist), arrays, tag)
    if baseline is not None:
        row["baseline"], row["control"] = baseline, control or "control"
    if shares is not None:
        row["predictions"] = {"k": subject.predictions, "accuracy_mean": float(shares[1].mean()),
                              "accuracy_std": float(shares[1].std()) if subject.predictions > 1 else 0.0,
                              "rule": RULE}
    row |= companion.row_extras(attack, tag, run, subject, row, cfg.batch_size, device, arrays)
    if cfg.binarization_test and baseline is None:  # a control row is not an evaluation to test
        row["binarization_test"] = binarization_test(attack, spec, subject, images=cfg.binarization_test,
                                                     threats=cfg.threat, seed=cfg.seed, batch_size=cfg.batch_size,
                                                     device=device, chunk_dir=arrays / f"{tag}.binarization.chunks")
    keep = min(len(data), REPORT_IMAGES)  # what the report shows
    # clones: torch.save writes a slice's whole storage, i.e. every image, without them
    saved = {"x": data.images[:keep].clone(), "x_adv": x_adv[:keep].clone(), "n_images": torch.tensor(len(data)),
             **{f"dist_{norm}": d[:keep].clone() for norm, d in dist.items()}}  # measured once, read by the report
    saved |= {f"{TRACE}{k}": v for k, v in run.traces.items()}  # e.g. boundary's queries and l2: (T, M attacked)
    saved |= {k: v[:keep].clone() for k, v in task.arrays(subject, adv).items()}  # e.g. label maps
    arrays.mkdir(parents=True, exist_ok=True)
    atomic.save_tensors(saved, arrays / f"{tag}.pt")
    if cfg.save_adversarials:
        row["adversarials_dir"] = save_adversarials(x_adv, data.names, arrays, tag)
    if companion.keep_perturbations:
        row["perturbations_dir"] = save_perturbations(data.images, x_adv, arrays, tag)
    parts = []
    for label, fooled, threat in companion.parts(attack, run.per_image):
        full = torch.zeros(len(data), dtype=torch.bool)
        full[index] = fooled.bool().cpu()
        parts.append((label, full, threat))
    return Outcome(row, x_adv, plan.attacked & success, adv, dist, parts, right)
