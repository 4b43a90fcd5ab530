"""Training HGD (Liao et al., CVPR 2018): adversarial training pairs made with the lab's own
gradient attacks, then the DUNET trained under a guidance loss with the target model frozen.

Pairs follow the paper's recipe: every training image gets an attack (FGSM or PGD / I-FGSM) and
a source model (the target, or others for the transfer/ensemble setting) and an l_inf budget eps
drawn uniformly from {1, ..., 16} / 255 (scaled by `eps_max`). The attacks run batched with a
per-image eps (`advlab.attacks.gradient.pgd_linf`). Training is resumable: the pairs and the state after
every epoch are kept in the output directory, and a restarted run continues from there, also
with more epochs than before (the cosine schedule is then stretched over the new length).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from advlab.attacks.gradient import pgd_linf
from advlab.core.checks import is_real, positive_int
from advlab.core.defense import clamp_unit
from advlab.core.errors import AdvlabError
from advlab.core.norms import NORMS
from advlab.core.rng import image_keys, step_keys, uniform
from advlab.defenses.dunet import DUNET
from advlab.defenses.hgd import Guidance, default_feature_layer, variant_name

TRAIN_ATTACKS = ("fgsm", "pgd")
EPS_LEVELS = 16  # eps = k * eps_max / 16, k uniform in 1..16 (the paper's 1..16 of 255)
STATE_FORMAT = "advlab-hgd-train-2"
_PAIR_STREAM = 21  # advlab.core.rng stream of each pair's eps and (attack, source) draw


@dataclass
class TrainSettings:
    variant: str = "lgd"  # pgd | fgd | lgd | cgd (pixel, feature, logits, class label guidance)
    layer: str | None = None  # fgd: the target's layer; None = its top convolutional feature map
    width: float = 1.0  # DUNET channel multiplier (1 = the paper's 11M parameters)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3  # Adam, cosine-annealed to 0 over the run (`cosine_lr`)
    eps_max: float = 16 / 255  # largest l_inf budget of the training examples
    attacks: tuple[str, ...] = TRAIN_ATTACKS
    pgd_steps: int = 10
    seed: int = 0  # the pairs' eps, attacks and random starts, the DUNET's initial weights, the batch order

    def __post_init__(self) -> None:
        self.variant = variant_name(self.variant)
        if not is_real(self.width) or not 0 < self.width <= 4:
            raise ValueError(f"width must be in (0, 4], got {self.width!r}")
        positive_int("epochs", self.epochs)
        positive_int("batch_size", self.batch_size)
        positive_int("pgd_steps", self.pgd_steps)
        if not is_real(self.lr) or not 0 < self.lr < 1:
            raise ValueError(f"lr must be in (0, 1), got {self.lr!r}")
        NORMS["linf"].check_eps(self.eps_max)
        self.attacks = tuple(self.attacks)
        bad = [a for a in self.attacks if a not in TRAIN_ATTACKS]
        if bad or not self.attacks:
            raise ValueError(f"training attacks must be among {', '.join(TRAIN_ATTACKS)}, got {bad or 'none'}")


# ---------------------------------------------------------------- training pairs
def make_pairs(sources: Sequence[nn.Module], x: torch.Tensor, labels: torch.Tensor, settings: TrainSettings,
               device: torch.device, *, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Adversarial versions of x (N, C, H, W): returns (x_adv (N, C, H, W) on CPU, eps (N,), source (N,)),
    source being the index in `sources` of the model each example was made on.

    Each image's eps and random start come from its own counter-based stream (`advlab.core.rng`), keyed by
    the seed and its pixels; the (attack, source) combinations are dealt in turn over the images
    sorted by that key, so they stay balanced. No draw depends on an image's position or the batch size."""
    n = x.shape[0]
    combos = [(a, s) for a in settings.attacks for s in range(len(sources))]
    keys = image_keys(x, settings.seed)  # (N,)
    draws = uniform(step_keys(keys, _PAIR_STREAM, 0), (1,))[:, 0]  # (N,) in (0, 1)
    eps = (draws * EPS_LEVELS).floor().add(1).clamp(max=EPS_LEVELS) * (settings.eps_max / EPS_LEVELS)
    assignment = torch.empty(n, dtype=torch.long)
    assignment[keys.argsort(stable=True)] = torch.arange(n) % len(combos)  # (N,) balanced, by key rank
    x_adv = torch.empty_like(x)
    bs = settings.batch_size * 4  # attacks need no optimizer state: larger batches than training
    bar = tqdm(total=n, desc="HGD pairs", unit="img", disable=not progress)
    for c, (attack, source) in enumerate(combos):
        index = (assignment == c).nonzero().squeeze(1)
        for i in range(0, index.numel(), bs):
            idx = index[i:i + bs]
            xs, ys, es = x[idx].to(device), labels[idx].to(device), eps[idx].to(device)
            if attack == "fgsm":
                adv = pgd_linf(sources[source], xs, ys, es, 1, es, random_start=False)
            else:
                adv = pgd_linf(sources[source], xs, ys, es, settings.pgd_steps, es * (2.5 / settings.pgd_steps),
                               seed=settings.seed)
            x_adv[idx] = adv.cpu()
            bar.update(idx.numel())
    bar.close()
    source = torch.tensor([s for _, s in combos])[assignment]  # (N,)
    return x_adv, eps, source


def pairs_fingerprint(x: torch.Tensor, settings: TrainSettings, source_names: Sequence[str]) -> str:
    """Identifies a set of pairs: the images, the attack settings and the source models."""
    text = "|".join(["pairs-v2", str(image_keys(x, 0).sum().item()), str(x.shape[0]), repr(settings.attacks),
                     repr(settings.eps_max), str(settings.pgd_steps), str(settings.seed), *source_names])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_pairs(path: Path, sources: Sequence[nn.Module], source_names: Sequence[str], x: torch.Tensor,
                 labels: torch.Tensor, settings: TrainSettings, device: torch.device,
                 progress: bool = True) -> torch.Tensor:
    """`make_pairs`, stored at `path` (float16) and reused when the same pairs are asked for again."""
    fingerprint = pairs_fingerprint(x, settings, source_names)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("fingerprint") == fingerprint:
            return saved["x_adv"].float()
    x_adv, eps, source = make_pairs(sources, x, labels, settings, device, progress=progress)
    torch.save({"fingerprint": fingerprint, "x_adv": x_adv.half(), "eps": eps, "source": source},
               path.with_suffix(".partial"))
    path.with_suffix(".partial").replace(path)
    return x_adv.half().float()  # the same values a resumed run will read back


# ---------------------------------------------------------------- training
@dataclass
class Split:
    clean: torch.Tensor  # (N, C, H, W) in [0, 1]
    adv: torch.Tensor  # (N, C, H, W), the adversarial version of each clean image
    labels: torch.Tensor  # (N,)


def accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, batch_size: int, device: torch.device,
             denoiser: nn.Module | None = None) -> float:
    """Top-1 accuracy of model (optionally behind the denoiser) on x (N, C, H, W)."""
    correct = torch.zeros((), dtype=torch.long, device=device)  # summed on the device: one sync at the end
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            xs = x[i:i + batch_size].to(device)
            if denoiser is not None:
                xs = denoiser(xs).float().clamp(0.0, 1.0)
            correct += (model(xs).argmax(1) == labels[i:i + batch_size].to(device)).sum()
    return int(correct) / max(1, x.shape[0])


def train_denoiser(target: nn.Module, train: Split, val: Split, settings: TrainSettings, state_path: Path, *,
                   device: torch.device, progress: bool = True) -> tuple[DUNET, list[dict[str, Any]]]:
    """Train a DUNET against the frozen `target`; returns (denoiser in eval mode, history per epoch).

    After every epoch the full state goes to `state_path`; if a compatible state is there already,
    training continues from it (a finished run returns at once). Compatible means the same settings
    except `epochs`: a run asked for more epochs than the state holds trains on, with the learning
    rate continuing on the cosine over the new total (from where the step count stands); a state
    with more epochs than asked for is an error."""
    target.eval()
    for p in target.parameters():
        p.requires_grad_(False)
    channels = train.clean.shape[1]
    if settings.variant == "fgd" and settings.layer is None:
        settings.layer = default_feature_layer(target, train.clean[:2].to(device))
    with torch.random.fork_rng(devices=[]):  # the initial weights follow settings.seed, not the global RNG
        torch.manual_seed(settings.seed)
        denoiser = DUNET(channels, settings.width)
    denoiser = denoiser.to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(denoiser.parameters(), lr=settings.lr)
    steps_per_epoch = math.ceil(train.clean.shape[0] / settings.batch_size)
    total_steps = settings.epochs * steps_per_epoch
    guidance = Guidance(settings.variant, target, settings.layer)
    history: list[dict[str, Any]] = []
    start = _resume(state_path, settings, denoiser, optimizer, history)
    step = start * steps_per_epoch
    autocast = torch.bfloat16 if device.type == "cuda" else None
    bs = settings.batch_size
    undefended = accuracy(target, val.adv, val.labels, bs * 4, device)
    clean_undefended = accuracy(target, val.clean, val.labels, bs * 4, device)
    for epoch in range(start, settings.epochs):
        denoiser.train()
        order = torch.randperm(train.clean.shape[0], generator=torch.Generator().manual_seed(settings.seed + epoch))
        bar = tqdm(total=len(order), desc=f"HGD-{settings.variant} epoch {epoch + 1}/{settings.epochs}", unit="img",
                   disable=not progress)
        t0, total, seen = time.perf_counter(), torch.zeros((), device=device), 0
        for i in range(0, len(order), bs):
            idx = order[i:i + bs]
            clean = train.clean[idx].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            adv = train.adv[idx].to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = train.labels[idx].to(device)
            with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                loss = guidance.loss(clamp_unit(denoiser(adv).float()), clean, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            for group in optimizer.param_groups:
                group["lr"] = cosine_lr(settings.lr, step, total_steps)
            optimizer.step()
            step += 1
            total += loss.detach() * idx.numel()
            seen += idx.numel()
            bar.update(idx.numel())
            if (i // bs) % 20 == 0:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
        wall = time.perf_counter() - t0
        denoiser.eval()
        record = {"epoch": epoch + 1, "loss": float(total) / seen, "wall_s": wall, "images_per_s": seen / wall,
                  "val_adv_accuracy": accuracy(target, val.adv, val.labels, bs * 4, device, denoiser),
                  "val_clean_accuracy": accuracy(target, val.clean, val.labels, bs * 4, device, denoiser),
                  "val_adv_accuracy_undefended": undefended, "val_clean_accuracy_undefended": clean_undefended}
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4f}", val_adv=f"{record['val_adv_accuracy']:.3f}",
                        val_clean=f"{record['val_clean_accuracy']:.3f}")
        bar.close()
        _save_state(state_path, settings, denoiser, optimizer, history)
    return denoiser.eval(), history


def cosine_lr(lr: float, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based) of `total_steps`: lr annealed to 0 on a
    half cosine (`CosineAnnealingLR` with eta_min 0, in closed form so a resumed run can stretch it)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(1, total_steps)))


def _settings_key(settings: TrainSettings) -> dict[str, Any]:
    """The settings a saved state must match to be continued: all but `epochs`."""
    d = dataclasses.asdict(settings)
    d.pop("epochs")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _save_state(path: Path, settings: TrainSettings, denoiser: nn.Module, optimizer: torch.optim.Optimizer,
                history: list[dict[str, Any]]) -> None:
    payload = {"format": STATE_FORMAT, "settings": _settings_key(settings), "denoiser": denoiser.state_dict(),
               "optimizer": optimizer.state_dict(), "history": history}
    torch.save(payload, path.with_suffix(".partial"))
    path.with_suffix(".partial").replace(path)


def _resume(path: Path, settings: TrainSettings, denoiser: nn.Module, optimizer: torch.optim.Optimizer,
            history: list[dict[str, Any]]) -> int:
    """Load a saved state into the objects; returns the epoch to continue from (0 if none fits)."""
    if not path.is_file():
        return 0
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("format") != STATE_FORMAT or saved.get("settings") != _settings_key(settings):
        raise AdvlabError(f"{path} holds a training run with other settings; use another --out, or delete it "
                          "to start over")
    if len(saved["history"]) > settings.epochs:
        raise AdvlabError(f"{path} holds {len(saved['history'])} epochs of training, more than the {settings.epochs} "
                          f"asked for; ask for --epochs {len(saved['history'])} or more, or use another --out")
    denoiser.load_state_dict(saved["denoiser"])
    optimizer.load_state_dict(saved["optimizer"])
    history.extend(saved["history"])
    return len(history)
