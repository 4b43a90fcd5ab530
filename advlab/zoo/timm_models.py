"""Models from timm (Wightman, "PyTorch Image Models", 2019) by name: `timm:NAME` (any `timm.list_models()`
name, a pretrained tag included: `timm:resnet18.a1_in1k`) and `hf-hub:ORG/NAME` (a timm model on the Hugging
Face Hub). The model's own `pretrained_cfg` gives mean, std, input size, resize/crop and interpolation: the
wrapper normalises with them, and image files are decoded with timm's own eval transform
(`resolve_data_config` + `create_transform`), so a timm model sees here what it sees in timm.

Weights: timm's own (downloaded and cached by timm, the default), `--weights none` (random init), or a local
FILE (.safetensors, .pth, .bin: your own training, loaded strictly, `weights_only`); the class count then comes
from the file's classifier unless `--num-classes` says it, and its input channels from its first convolution.
Needs `pip install 'advlab[timm]'`.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.core.errors import AdvlabError, first_line
from advlab.zoo.torchvision_weights import imagenet_class_names
from advlab.zoo.wrappers import ImageClassifier, check_logits, in_channels

EXTRA = "pip install 'advlab[timm]'"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")


def _timm() -> Any:
    try:
        import timm
    except ImportError:
        raise AdvlabError(f"timm models need timm, which is not installed: {EXTRA}") from None
    return timm


def knows(name: str) -> bool:
    """Whether timm is installed and has `name` as a model with a pretrained tag (e.g. resnet18.a1_in1k)."""
    try:
        import timm
    except ImportError:
        return False
    return name in timm.list_pretrained()


def load_timm(name: str, weights: str | None, *, mean: Sequence[float] | None, std: Sequence[float] | None,
              input_size: int | None, num_classes: int | None, **_: Any) -> ImageClassifier:
    """`timm:NAME` or `hf-hub:ORG/NAME`, wrapped with its pretrained_cfg's preprocessing (mean/std/input size
    given here override it)."""
    timm = _timm()
    arch = name.removeprefix("timm:")  # a bare tagged name (resnet18.a1_in1k) is timm's too
    if arch.startswith("timm/"):  # timm's organisation on the Hugging Face Hub
        arch = f"hf-hub:{arch}"
    tagged = "." in arch and not arch.startswith("hf-hub:")
    if not arch.startswith("hf-hub:") and (not timm.is_model(arch) or (tagged and arch not in timm.list_pretrained())):
        import difflib

        known = timm.list_pretrained(f"{arch.split('.')[0]}.*") if timm.is_model(arch) else timm.list_models()
        close = difflib.get_close_matches(arch, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see timm.list_models(pretrained=True)"
        raise AdvlabError(f"--model {name}: timm has no model {arch!r}; {hint}")
    file = _weights_file(weights)
    if file is not None:
        state = _read_state(file)
        shape = _shape_of(timm, arch, state)  # num_classes and in_chans, as the file's weights have them
        if num_classes:
            shape["num_classes"] = num_classes
        net = _create(timm, arch, name, pretrained=False, **shape)
        _load_strict(net, state, file, name)
        label = str(file)
    else:
        pretrained = weights is None or str(weights).upper() == "DEFAULT"
        if not pretrained and str(weights).lower() != "none":
            raise AdvlabError(f"--weights {weights!r} for {name}: give DEFAULT (timm's pretrained weights), none, or "
                              f"a weights file ({', '.join(WEIGHT_SUFFIXES)}) that exists")
        net = _create(timm, arch, name, pretrained=pretrained, **({"num_classes": num_classes} if num_classes else {}))
        label = "pretrained" if pretrained else "none"
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    from timm.data import create_transform, resolve_data_config

    cfg = resolve_data_config({}, model=net)  # input_size (C, H, W), interpolation, mean, std, crop_pct, crop_mode
    size = input_size or int(cfg["input_size"][-1])
    channels = in_channels(net, size)
    n_out = _output_classes(net, channels, size, name)
    geometry = {k: v for k, v in cfg.items() if k not in ("mean", "std")} | {"input_size": (channels, size, size)}
    transform = create_transform(**geometry, mean=(0.0,) * channels, std=(1.0,) * channels)  # timm's eval geometry
    mean, std = mean or _stats(cfg["mean"], channels, name, "mean"), std or _stats(cfg["std"], channels, name, "std")
    model = ImageClassifier(net, name=name, weights=label, mean=mean, std=std, input_size=size,
                            class_names=_class_names(n_out), in_channels=channels, named_classes=n_out == 1000)
    model.image_transform = transform
    model.preprocessing = {"source": "timm pretrained_cfg", "interpolation": cfg["interpolation"],
                           "crop_pct": cfg["crop_pct"], "crop_mode": cfg["crop_mode"]}
    return model.eval()


def _stats(values: Sequence[float], channels: int, name: str, which: str) -> Sequence[float]:
    """The pretrained_cfg's mean or std for a net of `channels` inputs: as given, or one value where the net
    has another channel count and the cfg's values agree (else one line asking for them)."""
    if len(values) == channels or len(set(values)) == 1:
        return values if len(values) == channels else values[:1]
    raise AdvlabError(f"{name} takes {channels} channel(s) but its pretrained_cfg's {which} has {len(values)} "
                      f"values; pass --{which} with what you trained it with")


def _create(timm: Any, arch: str, name: str, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(arch, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:  # no network, a hub error, a missing file
        raise AdvlabError(f"--model {name}: timm could not build it ({type(exc).__name__}: {first_line(exc)}); "
                          "offline, pass --weights FILE (your own weights) or --weights none") from None


def _weights_file(weights: str | None) -> Path | None:
    if weights is None or str(weights).upper() == "DEFAULT" or str(weights).lower() == "none":
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise AdvlabError(f"--weights {weights}: no such file; give a weights file ({', '.join(WEIGHT_SUFFIXES)}), "
                          "DEFAULT or none")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise AdvlabError(f"--weights {path}: not a weights file ({', '.join(WEIGHT_SUFFIXES)})")
    return path


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a user's file: one line
        raise AdvlabError(f"cannot read weights {path} ({type(exc).__name__}: {first_line(exc)}); save them with "
                          "safetensors.torch.save_file(model.state_dict(), FILE) or torch.save") from None
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise AdvlabError(f"weights {path} hold a {type(state).__name__}, not a state_dict")
    return state


def _shape_of(timm: Any, arch: str, state: dict[str, torch.Tensor]) -> dict[str, int]:
    """The class count and input channels of a state_dict, from the weights of the architecture's classifier
    and first convolution (as its pretrained_cfg names them)."""
    cfg = timm.models.get_pretrained_cfg(arch) if not arch.startswith("hf-hub:") else None
    if cfg is None:
        return {}
    out = {}
    for key, layer, axis in (("num_classes", cfg.classifier, 0), ("in_chans", cfg.first_conv, 1)):
        names = layer if isinstance(layer, (list, tuple)) else [layer]
        found = [state[f"{n}.weight"] for n in names if n and f"{n}.weight" in state]
        if found and found[0].dim() > axis:
            out[key] = int(found[0].shape[axis])
    return out


def _load_strict(net: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise AdvlabError(f"weights {path} do not fit {name}: {first_line(exc)}; check the architecture name and "
                          "--num-classes") from None


def _output_classes(net: nn.Module, channels: int, size: int, name: str) -> int:
    with torch.no_grad():
        out = net(torch.zeros(1, channels, size, size))
    check_logits(out, f"model {name}", batch=1)
    return int(out.shape[1])


def _class_names(n: int) -> list[str]:
    return list(imagenet_class_names()) if n == 1000 else [str(i) for i in range(n)]


__all__ = ["load_timm"]
