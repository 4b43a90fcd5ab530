"""HGD, the high-level representation guided denoiser (Liao, Liang, Dong, Pang, Hu & Zhu,
"Defense against Adversarial Attacks Using High-Level Representation Guided Denoiser", CVPR 2018).

A DUNET (defenses/dunet.py) in front of a frozen target model, trained so that the target's
response to the denoised adversarial image matches its response to the clean image. The four
guidance losses of the paper (Sec. 3.3), all L1 except CGD:

- `pgd`, pixel guided: |x_hat - x|, the plain denoising loss;
- `fgd`, feature guided: |f_l(x_hat) - f_l(x)| at a layer l of the target, by default its top
  convolutional feature map (the last module with a spatial output);
- `lgd`, logits guided: |z(x_hat) - z(x)| on the logits;
- `cgd`, class label guided: the cross-entropy of the target on x_hat against the true label.

A checkpoint is `{"state_dict", "config"}` (plain types only), read with `weights_only=True`.
Later work broke HGD with adaptive white-box attacks (Athalye & Carlini, arXiv 1804.03286), which
is why advlab evaluates every defense both non-adaptively and end to end.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.core import atomic
from advlab.core.defense import Defense, clamp_unit
from advlab.core.errors import AdvlabError, first_line
from advlab.core.registry import register_defense
from advlab.defenses.dunet import DUNET

VARIANTS = {"pgd": "pixel guided", "fgd": "feature guided", "lgd": "logits guided", "cgd": "class label guided"}
ALIASES = {"pixel": "pgd", "feature": "fgd", "logit": "lgd", "logits": "lgd", "class": "cgd"}
CHECKPOINT_FORMAT = "advlab-hgd-1"


def variant_name(text: str) -> str:
    """'lgd' | 'logit' | 'LGD' -> 'lgd'; ValueError for anything else."""
    key = ALIASES.get(text.lower(), text.lower())
    if key not in VARIANTS:
        raise ValueError(f"variant must be one of {', '.join(VARIANTS)} (or {', '.join(ALIASES)}), got {text!r}")
    return key


# ---------------------------------------------------------------- guidance
def default_feature_layer(model: nn.Module, sample: torch.Tensor) -> str:
    """The name of the last module (in execution order) whose output is a spatial map (N, C, H, W)
    with H * W > 1: the top convolutional features (e.g. 'net.layer4' for a ResNet)."""
    last: list[str] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out, name=name: last.append(name)
                                     if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-2:].numel() > 1
                                     else None)
             for name, m in model.named_modules() if name]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in hooks:
            h.remove()
    if not last:
        raise AdvlabError("the model has no module with a spatial (N, C, H, W) output; use --variant lgd or cgd "
                          "instead of fgd")
    return last[-1]


class FeatureTap:
    """Captures the output of one named module of `model` on every forward pass."""

    def __init__(self, model: nn.Module, layer: str) -> None:
        modules = dict(model.named_modules())
        if layer not in modules and f"net.{layer}" in modules:
            layer = f"net.{layer}"  # names relative to the wrapped network are accepted too
        if layer not in modules or not layer:
            close = [n for n in modules if n and layer.split(".")[-1] in n][:5]
            raise AdvlabError(f"the target model has no layer {layer!r}; pick one of its module names"
                              + (f", e.g. {', '.join(close)}" if close else ""))
        self.layer = layer
        self.output: torch.Tensor | None = None
        self._hook = modules[layer].register_forward_hook(self._keep)

    def _keep(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        self.output = output

    def remove(self) -> None:
        self._hook.remove()


class Guidance:
    """The training loss of one HGD variant against a frozen target model."""

    def __init__(self, variant: str, target: nn.Module, layer: str | None = None) -> None:
        self.variant, self.target = variant_name(variant), target
        self.tap = FeatureTap(target, layer) if self.variant == "fgd" and layer else None

    def loss(self, denoised: torch.Tensor, clean: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scalar loss; denoised, clean (N, C, H, W) in [0, 1], labels (N,)."""
        if self.variant == "pgd":
            return F.l1_loss(denoised.float(), clean.float())
        if self.variant == "cgd":
            return F.cross_entropy(self.target(denoised).float(), labels)
        with torch.no_grad():
            reference = self._response(clean)
        return F.l1_loss(self._response(denoised), reference)

    def _response(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.target(x).float()
        if self.tap is None:
            return logits
        assert self.tap.output is not None
        return self.tap.output.float()


# ---------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, denoiser: DUNET, config: dict[str, Any]) -> Path:
    """Write `{"format", "state_dict", "config"}`; config must hold plain types only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in denoiser.state_dict().items()}
    payload = {"format": CHECKPOINT_FORMAT,
               "config": {**config, "in_channels": denoiser.in_channels, "width": denoiser.width},
               "state_dict": state}
    tmp = path.with_suffix(".partial")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(path: str | Path) -> tuple[DUNET, dict[str, Any]]:
    """(denoiser in eval mode, config) from a checkpoint written by `save_checkpoint`."""
    p = Path(path)
    payload = atomic.read_tensors(p, "HGD checkpoint", "train one with `advlab defend --hgd --train --out DIR` "
                                  "or give the right path")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise AdvlabError(f"{p} is not an advlab HGD checkpoint (no format {CHECKPOINT_FORMAT!r}); "
                          "train one with `advlab defend --hgd --train`")
    config = payload["config"]
    denoiser = DUNET(int(config["in_channels"]), float(config["width"]))
    try:
        denoiser.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise AdvlabError(f"HGD checkpoint {p} does not match its own config: {first_line(exc)}") from None
    return denoiser.eval(), config


# ---------------------------------------------------------------- the plugin
@register_defense("hgd", tasks={"classification"})
class HGD(Defense):
    """HGD (Liao et al., CVPR 2018): a DUNET denoiser trained with guidance from the target model."""

    path_settings = ("checkpoint",)

    def __init__(self, *, checkpoint: str) -> None:
        super().__init__()
        self.checkpoint = str(checkpoint)
        self.denoiser, self.config = load_checkpoint(checkpoint)
        for p in self.denoiser.parameters():
            p.requires_grad_(False)

    @property
    def in_channels(self) -> int:
        return self.denoiser.in_channels

    def variant(self) -> str:
        return str(self.config.get("variant", "?"))

    def params(self) -> dict[str, Any]:
        keep = ("layer", "width", "target_model", "eps_max", "train_attacks", "epochs", "n_train")
        return {"checkpoint": self.checkpoint, **{k: self.config[k] for k in keep if k in self.config}}

    def train(self, mode: bool = True) -> HGD:
        super().train(False)  # batch norm always in inference mode: the denoiser is frozen here
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> same
        if x.shape[1] != self.denoiser.in_channels:
            raise AdvlabError(f"the HGD checkpoint {self.checkpoint} denoises {self.denoiser.in_channels}-channel "
                              f"images but got {x.shape[1]} channels; use a checkpoint trained on this data")
        return clamp_unit(self.denoiser(x))
