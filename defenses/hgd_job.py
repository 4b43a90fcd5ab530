"""`advlab defend --hgd --train`: make adversarial training pairs with the lab's attacks against a
target model, train the HGD denoiser (Liao et al., CVPR 2018) and save its checkpoint.

The output directory holds the checkpoint `hgd-<variant>.pt`, `train.json` (settings and the
per-epoch history), `log.txt`, and the resumable pieces (`hgd-pairs.pt`, `hgd-train-state.pt`):
running the same command again continues where a stopped run ended.
"""
from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlab.core.config import DataSpec, ModelSpec
from advlab.core.device import apply_precision, device_name, resolve_device
from advlab.core.errors import AdvlabError, Interrupted
from advlab.data.image_set import ImageSet
from advlab.data.sources import load_images
from advlab.defenses.hgd import save_checkpoint
from advlab.defenses.hgd_train import Split, TrainSettings, cached_pairs, train_denoiser
from advlab.run.runner import check_writable_dir, log_to
from advlab.tasks.classification import predict
from advlab.zoo.models import load_model
from advlab.zoo.wrappers import ImageClassifier

log = logging.getLogger("advlab")
TRAIN_MARKER = ".advlab-hgd-train"  # marks an output directory as this kind of job's (it may be continued)
CLEAN_COST_WARNING = 0.05  # a denoiser that costs more clean accuracy than this on its held-out pairs is flagged


@dataclass
class TrainJob:
    out: Path
    model: ModelSpec = field(default_factory=ModelSpec)
    sources: list[ModelSpec] = field(default_factory=list)  # extra source models for the pairs (transfer)
    data: DataSpec = field(default_factory=DataSpec)
    val_n: int | None = None  # held-out pairs for validation; None = 10% (at most 1,000)
    settings: TrainSettings = field(default_factory=TrainSettings)
    device: str = "auto"
    precision: str = "fp32"
    progress: bool = True
    resume_command: str = ""  # what continues the job after an interrupt (the same command, same --out)


def _load(spec: ModelSpec, device: torch.device) -> ImageClassifier:
    model = load_model(spec.name, spec.weights, mean=spec.mean, std=spec.std, input_size=spec.input_size,
                       num_classes=spec.num_classes, class_names_file=spec.class_names)
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def train_hgd(job: TrainJob) -> Path:
    """Run a training job; returns the checkpoint path. Models and data are loaded and checked before
    anything is written; `job.out` must be new, empty, or this job's own earlier output (then it continues)."""
    device = resolve_device(job.device)
    apply_precision(job.precision)
    model = _load(job.model, device)
    sources = [model] + [_load(s, device) for s in job.sources]
    data = load_images(job.data.source, model, n=job.data.n)
    n = len(data)
    val_n = job.val_n if job.val_n is not None else min(1000, max(1, n // 10))
    if not 1 <= val_n < n:
        raise AdvlabError(f"--val-n {val_n} must be at least 1 and less than the {n} training images; "
                          "load more with -n or lower --val-n")
    if not any((job.out / name).is_file() for name in (TRAIN_MARKER, "hgd-pairs.pt", "hgd-train-state.pt")):
        check_writable_dir(job.out, "--out")  # not an earlier training job's directory
    job.out.mkdir(parents=True, exist_ok=True)
    (job.out / TRAIN_MARKER).write_text(json.dumps({"kind": "hgd-train"}), encoding="utf-8")
    handler = log_to(job.out / "log.txt")
    try:
        return _train(job, device, model, sources, data, val_n)
    except KeyboardInterrupt:
        log.error("training interrupted; the pairs and the last finished epoch are kept")
        raise Interrupted(job.resume_command or f"the same command with --out {job.out}") from None
    finally:
        log.removeHandler(handler)
        handler.close()


def _train(job: TrainJob, device: torch.device, model: ImageClassifier, sources: list[ImageClassifier],
           data: ImageSet, val_n: int) -> Path:
    n, x = len(data), data.x  # (N, C, H, W): the training pairs are held in memory, decoded once
    labels = torch.where(data.y >= 0, data.y, predict(model, x, 256, device).label)
    names = [f"{s.name}@{s.weights}" for s in [job.model, *job.sources]]
    log.info("HGD-%s: %d pairs from %s, sources %s, device %s", job.settings.variant, n, data.source,
             ", ".join(names), device_name(device))
    x_adv = cached_pairs(job.out / "hgd-pairs.pt", sources, names, x, labels, job.settings, device,
                         progress=job.progress)
    train = Split(x[:-val_n], x_adv[:-val_n], labels[:-val_n])
    val = Split(x[-val_n:], x_adv[-val_n:], labels[-val_n:])
    denoiser, history = train_denoiser(model, train, val, job.settings, job.out / "hgd-train-state.pt",
                                       device=device, progress=job.progress)
    settings = asdict(job.settings)
    config: dict[str, Any] = {
        **{k: list(v) if isinstance(v, tuple) else v for k, v in settings.items() if k != "attacks"},
        "train_attacks": list(job.settings.attacks), "target_model": model.describe(), "sources": names,
        "data": data.source, "n_train": n - val_n, "n_val": val_n, "history": history,
    }
    path = save_checkpoint(job.out / f"hgd-{job.settings.variant}.pt", denoiser, config)
    (job.out / "train.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    last = history[-1]
    log.info("HGD-%s trained: validation accuracy %.3f on adversarial pairs (%.3f undefended), %.3f clean; %s",
             job.settings.variant, last["val_adv_accuracy"], last["val_adv_accuracy_undefended"],
             last["val_clean_accuracy"], path)
    cost = last.get("val_clean_accuracy_undefended", last["val_clean_accuracy"]) - last["val_clean_accuracy"]
    if cost > CLEAN_COST_WARNING:
        log.warning("the denoiser costs %.0f points of clean accuracy on its %d held-out images (%.3f undefended "
                    "-> %.3f defended): it is not usable as it is; train longer (--epochs), on more images (-n) "
                    "or wider (--width)", 100 * cost, val_n, last["val_clean_accuracy_undefended"],
                    last["val_clean_accuracy"])
    return path
