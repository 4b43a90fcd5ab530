"""Attack rows of results.json: one attack on one subject (a model, or a defended model, with its
data and clean predictions), the criterion and the images it runs on, metrics and per-image samples."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.attack import Attack
from advlab.config import AttackSpec, RunConfig
from advlab.data import ImageSet, load_image_file
from advlab.errors import AdvlabError
from advlab.evaluate import Predictions, accuracy, attack_in_chunks, image_distances, predict, summarize
from advlab.registry import get_attack
from advlab.tasks import Criterion, Targeted, Untargeted
from advlab.universal_eval import HeldOut, random_baseline, universal_summary


@dataclass
class Subject:
    """One model with its data, clean predictions and labels (the same images for every attack)."""

    model: nn.Module  # an ImageClassifier, or Defended(classifier, defense)
    data: ImageSet
    clean: Predictions
    labels: torch.Tensor  # (N,) ground truth, or the clean prediction for unlabeled data
    held_out: HeldOut | None


@dataclass
class Outcome:
    """An attack row of results.json and the tensors later stages need (defense evaluation)."""

    row: dict[str, Any]
    x_adv: torch.Tensor  # (N, C, H, W) on CPU; the clean image where the attack did not run
    won: torch.Tensor  # (N,) bool, attacked and successful
    adv_label: torch.Tensor  # (N,) the subject model's prediction on x_adv


def run_attack(tag: str, spec: AttackSpec, attack: Attack, subject: Subject, cfg: RunConfig,
               device: torch.device, arrays: Path) -> list[Outcome]:
    """The rows of one attack: one, or two for a universal perturbation (plus its random baseline)."""
    outcomes = [attack_row(tag, spec, attack, subject, cfg, device, arrays)]
    baseline = random_baseline(attack)
    if baseline is not None:
        outcomes.append(attack_row(f"{tag}-random", spec, baseline, subject, cfg, device, arrays))
        outcomes[-1].row["baseline"] = "random perturbation of the same norm (Moosavi-Dezfooli et al. 2017)"
    return outcomes


def attack_row(tag: str, spec: AttackSpec, attack: Attack, subject: Subject, cfg: RunConfig,
               device: torch.device, arrays: Path) -> Outcome:
    model, data, clean, labels = subject.model, subject.data, subject.clean, subject.labels
    universal = getattr(attack, "universal", False)
    criterion, attacked, starting = plan_attack(spec, subject, device, universal=universal)
    index = attacked.nonzero().squeeze(1)
    run = attack_in_chunks(attack, model, data.x[index], criterion.subset(index),
                           starting_points=starting[index] if starting is not None else None,
                           batch_size=len(data) if universal else cfg.batch_size, device=device, seed=cfg.seed,
                           chunk_dir=arrays / f"{tag}.chunks")
    x_adv = data.x.clone()
    x_adv[index] = run.x_adv
    success = torch.zeros(len(data), dtype=torch.bool)
    success[index] = run.success
    queries = torch.zeros(len(data), dtype=torch.long)
    queries[index] = run.queries
    adv = predict(model, x_adv, cfg.batch_size, device)
    dist = image_distances(data.x, x_adv)  # (N,) per norm
    row: dict[str, Any] = {
        "method": spec.method, "backend": getattr(attack, "backend", "ours"), "defense": None, "adaptive": None,
        "setting": "plain model", "threat": get_attack(spec.method).threat,
        "criterion": "targeted" if isinstance(criterion, Targeted) else "untargeted",
        "target_class": int(criterion.labels[0]) if isinstance(criterion, Targeted) else None,
        "starting_image": spec.starting_image, "params": attack.params(),
        "clean_accuracy": accuracy(clean.label, labels),
        **summarize(dist, labels, clean, adv, attacked, success, queries),
        "wall_s": run.wall_s,
    }
    row["model_images_per_s"] = row["queries_total"] / run.wall_s if run.wall_s > 0 else None
    row["arrays"] = f"arrays/{tag}.pt"
    row["samples"] = _samples(data, model, labels, clean, adv, attacked, success, queries, dist)
    if universal:
        row |= universal_summary(tag, attack, run.extras, model, subject.held_out, row, cfg.batch_size, device,
                                 arrays)
    saved = {"x": data.x, "x_adv": x_adv}
    if run.trace_l2 is not None and run.trace_queries is not None:
        saved |= {"trace_queries": run.trace_queries, "trace_l2": run.trace_l2}
    arrays.mkdir(parents=True, exist_ok=True)
    torch.save(saved, arrays / f"{tag}.pt")
    return Outcome(row, x_adv, attacked & success, adv.label)


def plan_attack(spec: AttackSpec, subject: Subject, device: torch.device, *,
                universal: bool = False) -> tuple[Criterion, torch.Tensor, torch.Tensor | None]:
    """The criterion, which images to attack (N,) bool, and starting points for decision-based
    targeted attacks. Untargeted: the correctly classified images; targeted: those not yet in the target.
    Universal perturbations run on every image, away from its clean prediction (the fooling ratio).
    Cheap and side-effect free: the runner calls it for every attack before it writes anything, so a
    bad target class or starting image is reported before the run starts. No image to attack is valid."""
    model, data, clean, labels = subject.model, subject.data, subject.clean, subject.labels
    if spec.target_class is not None and not 0 <= spec.target_class < model.num_classes:
        raise AdvlabError(f"--target-class {spec.target_class} is out of range: the model has {model.num_classes} "
                          f"classes (0..{model.num_classes - 1})")
    if universal:
        everyone = torch.ones(len(data), dtype=torch.bool)
        if spec.target_class is not None:
            return Targeted(torch.full_like(labels, spec.target_class)), everyone, None
        return Untargeted(clean.label), everyone, None
    if spec.target_class is None and spec.starting_image is None:
        return Untargeted(labels), clean.label == labels, None
    start = _starting_image(spec, data, model, device) if spec.starting_image else None
    target = spec.target_class if spec.target_class is not None else int(start[1])  # type: ignore[index]
    if start is not None and start[1] != target:
        raise AdvlabError(f"--starting-image {spec.starting_image} is classified as class {start[1]} "
                          f"({model.class_names[start[1]]}), not the target class {target}; pick another image")
    attacked = clean.label != target
    starting = None
    if get_attack(spec.method).threat == "decision" and bool(attacked.any()):
        if start is None:
            pool = (clean.label == target).nonzero().squeeze(1)
            if pool.numel() == 0:
                raise AdvlabError(f"no image in {data.source} is classified as class {target} "
                                  f"({model.class_names[target]}), so the decision-based attack has no starting "
                                  "point; pass --starting-image FILE (an image of that class)")
            start = (data.x[pool[0]], target)
        starting = start[0].expand_as(data.x).clone()
    return Targeted(torch.full_like(labels, target)), attacked, starting


def _starting_image(spec: AttackSpec, data: ImageSet, model: nn.Module,
                    device: torch.device) -> tuple[torch.Tensor, int]:
    image = load_image_file(str(spec.starting_image), model)  # (C, H, W)
    if image.shape != data.x.shape[1:]:
        raise AdvlabError(f"--starting-image has shape {tuple(image.shape)} but the images are "
                          f"{tuple(data.x.shape[1:])}; set --input-size or use an image of that size")
    return image, int(predict(model, image[None], 1, device).label[0])


def _samples(data: ImageSet, model: nn.Module, labels: torch.Tensor, clean: Predictions, adv: Predictions,
             attacked: torch.Tensor, success: torch.Tensor, queries: torch.Tensor,
             dist: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """One record per image for results.json (tensors turned into lists once, not per element)."""
    names = model.class_names
    won = (attacked & success).tolist()
    columns = zip(data.names, labels.tolist(), clean.label.tolist(), clean.confidence.tolist(), adv.label.tolist(),
                  adv.confidence.tolist(), attacked.tolist(), won, dist["l2"].tolist(), dist["linf"].tolist(),
                  queries.tolist())
    return [{"name": name, "label": y, "label_name": names[y], "clean_pred": c, "clean_pred_name": names[c],
             "clean_conf": cc, "adv_pred": a, "adv_pred_name": names[a], "adv_conf": ac, "attacked": hit,
             "success": ok, "l2": l2 if ok else None, "linf": linf if ok else None, "queries": q}
            for name, y, c, cc, a, ac, hit, ok, l2, linf, q in columns]
