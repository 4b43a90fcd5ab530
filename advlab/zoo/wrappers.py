"""The wrappers every classifier and segmenter is seen through: `ImageClassifier` / `ImageSegmenter`
own the [0, 1] bounds, resizing, normalisation and class names, so attacks only ever see [0, 1]
images; `check_logits` says in one line what a model returned instead of logits."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.core.errors import AdvlabError


class ImageClassifier(nn.Module):
    """[0, 1] images (N, C, H, W) -> logits (N, K). Resizes to `input_size`, normalises with mean/std."""

    task = "classification"  # the task adapter that plans and measures attacks on it (advlab.tasks)
    annotations = "labels"  # what data sources label its images with: a class per image
    output_rank, output_shape = 2, "(N, classes)"  # its logits
    names_classes_in_results = False  # describe() leaves the class names out (1000 ImageNet names add nothing)

    def __init__(self, net: nn.Module, *, name: str, weights: str, mean: Sequence[float], std: Sequence[float],
                 input_size: int | None, class_names: Sequence[str], in_channels: int,
                 named_classes: bool = True) -> None:
        super().__init__()
        self.net = net
        self.name, self.weights = name, weights
        self.input_size, self.in_channels = input_size, in_channels
        self.class_names = list(class_names)
        self.named_classes = named_classes  # False: the names are only indices ("0", "1", ...)
        self.register_buffer("mean", _per_channel(mean, in_channels, "mean").view(1, -1, 1, 1))
        self.register_buffer("std", _per_channel(std, in_channels, "std").view(1, -1, 1, 1))
        self.autocast_dtype: torch.dtype | None = None  # bf16 when --precision bf16
        self.net_dtype = input_dtype(net)  # what the net computes in (float64 weights: float64 inputs)
        # how image files are decoded for it: None = advlab's (shorter side to size/0.875, bilinear, center
        # crop); else a picklable PIL image -> (C, H, W) [0, 1] transform, e.g. timm's eval transform
        self.image_transform: Callable[[Any], torch.Tensor] | None = None
        self.preprocessing: dict[str, Any] | None = None  # what image_transform does, for results.json
        self.published: dict[str, Any] | None = None  # a leaderboard's figures for this model (RobustBench)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def adopt_class_names(self, names: Sequence[str]) -> None:
        """Take a data source's class names when the model has none of its own (e.g. Fashion-MNIST
        for a bring-your-own model without --class-names)."""
        if not self.named_classes and len(names) == self.num_classes:
            self.class_names, self.named_classes = list(names), True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> (N, K) float32
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = ((x - self.mean) / self.std).to(self.net_dtype)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
                return self.net(x).float()
        return self.net(x).float()

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "weights": self.weights, "task": self.task,
                "num_classes": self.num_classes, "input_size": self.input_size, "in_channels": self.in_channels,
                "mean": [round(v, 6) for v in self.mean.flatten().tolist()],
                "std": [round(v, 6) for v in self.std.flatten().tolist()],
                **({"preprocessing": self.preprocessing} if self.preprocessing else {}),
                **({"published": self.published} if self.published else {}),
                **({"class_names": self.class_names} if self.names_classes_in_results else {})}


class ImageSegmenter(ImageClassifier):
    """[0, 1] images (N, C, H, W) -> per-pixel logits (N, K, H, W) at the input's resolution (any H, W).
    Normalises with mean/std; a dict output (torchvision's) gives its "out" entry, the aux head is ignored."""

    task = "segmentation"
    annotations = "masks"  # a class per pixel
    output_rank, output_shape = 4, "(N, classes, H, W)"
    names_classes_in_results = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> (N, K, H, W) float32
        size = tuple(x.shape[-2:])
        x = ((x - self.mean) / self.std).to(self.net_dtype)
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
                out = self.net(x)
        else:
            out = self.net(x)
        if isinstance(out, dict):
            out = out["out"]
        if tuple(out.shape[-2:]) != size:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
        return out.float()


def _per_channel(values: Sequence[float], channels: int, field_name: str) -> torch.Tensor:
    t = torch.as_tensor(list(values), dtype=torch.float32)
    if t.numel() == 1:
        t = t.repeat(channels)
    if t.numel() != channels:
        raise AdvlabError(f"--{field_name} has {t.numel()} values for a {channels}-channel model; give 1 or {channels}")
    if field_name == "std" and bool((t <= 0).any()):
        raise AdvlabError(f"--std must be positive, got {t.tolist()}")
    return t


def input_dtype(net: nn.Module) -> torch.dtype:
    """The floating dtype of a net's parameters (float32 for a net without any): what its inputs are cast to."""
    return next((p.dtype for p in net.parameters() if p.is_floating_point()), torch.float32)


def in_channels(net: nn.Module, input_size: int | None = None) -> int:
    """Input channels, as the weights say: the first conv kernel (out, in, kh, kw), or for a
    perceptron the first layer's width over the image area."""
    for p in net.parameters():
        if p.dim() == 4:
            return int(p.shape[1])
    first = next((m for m in net.modules() if isinstance(m, nn.Linear)), None)
    if first is not None and input_size and first.in_features % (input_size * input_size) == 0:
        return first.in_features // (input_size * input_size)
    return 3


WRAPPERS: tuple[type[ImageClassifier], ...] = (ImageClassifier, ImageSegmenter)  # what logits a factory can return


def wrapper_for(task: str | None) -> type[ImageClassifier]:
    """The wrapper of models whose logits serve `task` (None: a classifier)."""
    if task is None:
        return ImageClassifier
    found = next((w for w in WRAPPERS if w.task == task), None)
    if found is None:
        raise AdvlabError(f"--task {task} is not a task of logits; a model factory's logits serve "
                          f"{' or '.join(w.task for w in WRAPPERS)}")
    return found


def check_logits(out: object, who: str, batch: int,
                 kind: type[ImageClassifier] | None = ImageClassifier) -> type[ImageClassifier]:
    """A model's output must be float logits of the shape its wrapper `kind` reads ((batch, classes) for
    a classifier, (batch, classes, H, W) for a segmenter; None: any wrapper's); else one line saying
    what came back. Returns the wrapper whose shape it has."""
    wanted = [kind] if kind is not None else list(WRAPPERS)
    shapes = " or ".join(w.output_shape for w in wanted)
    if not isinstance(out, torch.Tensor):
        name = type(out).__name__
        raise AdvlabError(f"{who} returned a {name}, not a tensor of logits {shapes}; make forward() return "
                          f"only the logits (e.g. the first element of the {name})")
    found = next((w for w in wanted if out.dim() == w.output_rank), None)
    if found is None or out.shape[0] != batch or not out.is_floating_point():
        other = next((w for w in WRAPPERS if w.output_rank == out.dim()), None)
        if kind is not None and other is not None and out.shape[0] == batch and out.is_floating_point():
            raise AdvlabError(f"{who} returns {other.task} logits of shape {tuple(out.shape)}, but the task is "
                              f"{kind.task}; use --task {other.task} (or a {kind.task} model)")
        raise AdvlabError(f"{who} returned {out.dtype} of shape {tuple(out.shape)} for {batch} images; a model "
                          f"must return float logits of shape {shapes}")
    return found


def wrap(net: nn.Module, name: str, weights: str, mean: Sequence[float], std: Sequence[float],
          input_size: int | None, class_names: Sequence[str], named_classes: bool = True,
          task: str | None = None) -> ImageClassifier:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return wrapper_for(task)(net, name=name, weights=weights, mean=mean, std=std, input_size=input_size,
                           class_names=class_names, in_channels=in_channels(net, input_size),
                           named_classes=named_classes).eval()
