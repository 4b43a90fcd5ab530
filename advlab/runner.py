"""An experiment: one model, one data set, a list of attacks. Writes the run directory
(config.yaml, results.json, arrays/, log.txt, index.html); `resume` continues a killed run."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from advlab import __version__
from advlab.attack import Attack
from advlab.config import AttackSpec, ModelSpec, RunConfig, attack_defaults, load_config, parse_number, to_yaml
from advlab.data import ImageSet, load_image_file, load_images
from advlab.device import apply_precision, device_name, resolve_device
from advlab.errors import AdvlabError
from advlab.evaluate import Predictions, attack_in_chunks, image_distances, predict, summarize
from advlab.models import ImageClassifier, load_model
from advlab.registry import get_attack
from advlab.report import render_report
from advlab.tasks import Criterion, Targeted, Untargeted
from advlab.universal_eval import HeldOut, random_baseline, transfer_matrix, universal_summary

log = logging.getLogger("advlab")


def build_attack(spec: AttackSpec) -> Attack:
    """Instantiate a registered attack; bad settings become one line naming the setting."""
    info = get_attack(spec.method)
    valid = attack_defaults(info.cls)
    params = {k: parse_number(v) for k, v in spec.params.items()}
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise AdvlabError(f"attack {spec.method} has no setting {unknown[0]!r}; valid: {', '.join(valid)}")
    try:
        return info.cls(**params)
    except (ValueError, TypeError) as exc:
        raise AdvlabError(f"attack {spec.method}: {exc}") from None


def new_run_dir(cfg: RunConfig) -> Path:
    if cfg.out:
        run_dir = Path(cfg.out)
        if (run_dir / "results.json").exists() or (run_dir / "config.yaml").exists():
            raise AdvlabError(f"run directory {run_dir} already holds a run; pick another --out, or --resume it")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("reports") / f"{cfg.name}-{stamp}"
        k = 1
        while run_dir.exists():
            k += 1
            run_dir = Path("reports") / f"{cfg.name}-{stamp}-{k}"
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_experiment(cfg: RunConfig, *, resume: Path | None = None) -> Path:
    """Run (or resume) an experiment and return its run directory."""
    attacks = [build_attack(spec) for spec in cfg.attacks]  # fail on bad settings before any heavy work
    if resume is not None:
        run_dir = resume
    else:
        run_dir = new_run_dir(cfg)
        (run_dir / "config.yaml").write_text(to_yaml(_resolved(cfg)), encoding="utf-8")
    handler = _log_to(run_dir / "log.txt")
    try:
        return _execute(cfg, attacks, run_dir)
    finally:
        log.removeHandler(handler)
        handler.close()


def resume_experiment(run_dir: Path) -> Path:
    if not (run_dir / "config.yaml").is_file():
        raise AdvlabError(f"--resume {run_dir}: no config.yaml there; give a run directory advlab wrote")
    return run_experiment(load_config(run_dir / "config.yaml"), resume=run_dir)


@dataclass
class _Subject:
    """One model with its data, clean predictions and labels (the same images for every attack)."""

    model: ImageClassifier
    data: ImageSet
    clean: Predictions
    labels: torch.Tensor  # (N,) ground truth, or the clean prediction for unlabeled data
    held_out: HeldOut | None


def _execute(cfg: RunConfig, attacks: list[Attack], run_dir: Path) -> Path:
    device = resolve_device(cfg.device)
    autocast = apply_precision(cfg.precision)
    subjects = [_subject(spec, cfg, device, autocast) for spec in (cfg.models or [cfg.model])]
    first = subjects[0]
    results: dict[str, Any] = {
        "schema": 1, "advlab_version": __version__, "name": cfg.name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "seed": cfg.seed,
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "precision": cfg.precision, "batch_size": cfg.batch_size,
        "model": first.model.describe(),
        "data": {"name": first.data.source, "n": len(first.data), "label_source": first.data.label_source},
        "clean": {"accuracy": _accuracy(first.clean.label, first.labels)},
        "attacks": [], "defenses": [],
    }
    if first.held_out is not None:
        results["data"]["eval"] = {"name": first.held_out.data.source, "n": len(first.held_out.data)}
    if len(subjects) > 1:
        results["models"] = [{**s.model.describe(), "clean_accuracy": _accuracy(s.clean.label, s.labels)}
                             for s in subjects]
    arrays = run_dir / "arrays"
    universal_rows: list[tuple[int, dict[str, Any]]] = []
    for m, subject in enumerate(subjects):
        for i, (spec, attack) in enumerate(zip(cfg.attacks, attacks)):
            tag = f"{spec.method}-{i}" + (f"-m{m}" if len(subjects) > 1 else "")
            rows = _run_attack(tag, spec, attack, subject, cfg, device, arrays)
            for row in rows:
                if len(subjects) > 1:
                    row["model"] = subject.model.name
                results["attacks"].append(row)
                log.info("%s on %s: success %s, fooling %.3f, median L2 %s, %.1f s", row["method"],
                         subject.model.name, row["success_rate"], row["fooling_ratio"], row["median_l2"],
                         row["wall_s"])
            if "perturbation_file" in rows[0] and not rows[0].get("baseline"):
                universal_rows.append((m, rows[0]))
    if len(subjects) > 1 and universal_rows:
        results["transfer"] = transfer_matrix([(s.model, s.held_out or HeldOut.of(s)) for s in subjects],
                                              universal_rows, run_dir, cfg.batch_size, device)
    (run_dir / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    render_report(run_dir)
    return run_dir


def _accuracy(pred: torch.Tensor, labels: torch.Tensor) -> float:
    return float((pred == labels).float().mean())


def _subject(spec: ModelSpec, cfg: RunConfig, device: torch.device, autocast: torch.dtype | None) -> _Subject:
    model = load_model(spec.name, spec.weights, mean=spec.mean, std=spec.std, input_size=spec.input_size,
                       num_classes=spec.num_classes, class_names_file=spec.class_names).to(device)
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on GPUs and CPUs alike
    model.autocast_dtype = autocast
    data = load_images(cfg.data.source, model, n=cfg.data.n)
    log.info("%s on %d images from %s, device %s", model.name, len(data), data.source, device_name(device))
    clean = predict(model, data.x, cfg.batch_size, device)
    labels = torch.where(data.y >= 0, data.y, clean.label)
    held_out = None
    if cfg.data.eval_source:
        held = load_images(cfg.data.eval_source, model, n=cfg.data.eval_n)
        held_out = HeldOut(held, predict(model, held.x, cfg.batch_size, device))
    return _Subject(model, data, clean, labels, held_out)


def _run_attack(tag: str, spec: AttackSpec, attack: Attack, subject: _Subject, cfg: RunConfig,
                device: torch.device, arrays: Path) -> list[dict[str, Any]]:
    """The result rows of one attack: one, or two for a universal perturbation (plus its random baseline)."""
    rows = [_attack_row(tag, spec, attack, subject, cfg, device, arrays)]
    baseline = random_baseline(attack)
    if baseline is not None:
        rows.append(_attack_row(f"{tag}-random", spec, baseline, subject, cfg, device, arrays))
        rows[-1]["baseline"] = "random perturbation of the same norm (Moosavi-Dezfooli et al. 2017)"
    return rows


def _attack_row(tag: str, spec: AttackSpec, attack: Attack, subject: _Subject, cfg: RunConfig,
                device: torch.device, arrays: Path) -> dict[str, Any]:
    model, data, clean, labels = subject.model, subject.data, subject.clean, subject.labels
    universal = getattr(attack, "universal", False)
    criterion, attacked, starting = _criterion(spec, data, clean, labels, model, device, universal=universal)
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
        "clean_accuracy": float((clean.label == labels).float().mean()),
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
    return row


def _criterion(spec: AttackSpec, data: ImageSet, clean: Predictions, labels: torch.Tensor, model: ImageClassifier,
               device: torch.device, *, universal: bool = False) -> tuple[Criterion, torch.Tensor, torch.Tensor | None]:
    """The criterion, which images to attack (N,) bool, and starting points for decision-based
    targeted attacks. Untargeted: the correctly classified images; targeted: those not yet in the target.
    Universal perturbations run on every image, away from its clean prediction (the fooling ratio)."""
    if universal:
        everyone = torch.ones(len(data), dtype=torch.bool)
        if spec.target_class is not None:
            return Targeted(torch.full_like(labels, spec.target_class)), everyone, None
        return Untargeted(clean.label), everyone, None
    if spec.target_class is None and spec.starting_image is None:
        return Untargeted(labels), clean.label == labels, None
    start = _starting_image(spec, data, model, device) if spec.starting_image else None
    target = spec.target_class if spec.target_class is not None else int(start[1])  # type: ignore[index]
    if target >= model.num_classes:
        raise AdvlabError(f"--target-class {target} is out of range: the model has {model.num_classes} classes")
    if start is not None and start[1] != target:
        raise AdvlabError(f"--starting-image {spec.starting_image} is classified as class {start[1]} "
                          f"({model.class_names[start[1]]}), not the target class {target}; pick another image")
    starting = None
    if get_attack(spec.method).threat == "decision":
        if start is None:
            pool = (clean.label == target).nonzero().squeeze(1)
            if pool.numel() == 0:
                raise AdvlabError(f"no image in {data.source} is classified as class {target} "
                                  f"({model.class_names[target]}), so the decision-based attack has no starting "
                                  "point; pass --starting-image FILE (an image of that class)")
            start = (data.x[pool[0]], target)
        starting = start[0].expand_as(data.x).clone()
    return Targeted(torch.full_like(labels, target)), clean.label != target, starting


def _starting_image(spec: AttackSpec, data: ImageSet, model: ImageClassifier,
                    device: torch.device) -> tuple[torch.Tensor, int]:
    image = load_image_file(str(spec.starting_image), model)  # (C, H, W)
    if image.shape != data.x.shape[1:]:
        raise AdvlabError(f"--starting-image has shape {tuple(image.shape)} but the images are "
                          f"{tuple(data.x.shape[1:])}; set --input-size or use an image of that size")
    return image, int(predict(model, image[None], 1, device).label[0])


def _samples(data: ImageSet, model: ImageClassifier, labels: torch.Tensor, clean: Predictions, adv: Predictions,
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


def _resolved(cfg: RunConfig) -> RunConfig:
    """A copy with every attack setting filled with its default, for RUN_DIR/config.yaml."""
    specs = [AttackSpec(s.method, s.target_class, s.starting_image,
                        {**attack_defaults(get_attack(s.method).cls), **s.params}) for s in cfg.attacks]
    return RunConfig(**{**cfg.__dict__, "attacks": specs})


def _log_to(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


__all__ = ["run_experiment", "resume_experiment", "build_attack"]
