"""Model zoo: the wrappers every model is seen through, and `load_model`, which dispatches a name to
torchvision's classifiers (here), segmenters (`advlab.segmenters`), detectors (`advlab.detectors`),
MTCNN (`advlab.mtcnn`) or a bring-your-own factory (`advlab.custom_models`); torchvision weights are
resolved by `advlab.torchvision_weights`.

Every classifier and segmenter is wrapped in `ImageClassifier` / `ImageSegmenter`, which own the
[0, 1] bounds, resizing, normalisation and class names, so attacks only ever see [0, 1] images.
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from advlab.catalog import Catalog
from advlab.errors import AdvlabError
from advlab.torchvision_weights import build_with_weights


class ImageClassifier(nn.Module):
    """[0, 1] images (N, C, H, W) -> logits (N, K). Resizes to `input_size`, normalises with mean/std."""

    task = "classification"  # the task adapter that plans and measures attacks on it (advlab.tasks)

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
        x = (x - self.mean) / self.std
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
                return self.net(x).float()
        return self.net(x).float()

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "weights": self.weights, "task": self.task,
                "num_classes": self.num_classes, "input_size": self.input_size, "in_channels": self.in_channels,
                "mean": [round(v, 6) for v in self.mean.flatten().tolist()],
                "std": [round(v, 6) for v in self.std.flatten().tolist()],
                **({"class_names": self.class_names} if self.task != "classification" else {})}


class ImageSegmenter(ImageClassifier):
    """[0, 1] images (N, C, H, W) -> per-pixel logits (N, K, H, W) at the input's resolution (any H, W).
    Normalises with mean/std; a dict output (torchvision's) gives its "out" entry, the aux head is ignored."""

    task = "segmentation"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W) in [0, 1] -> (N, K, H, W) float32
        size = tuple(x.shape[-2:])
        x = (x - self.mean) / self.std
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


Loader = Callable[..., nn.Module]  # (name, weights, *, mean, std, input_size, num_classes, class_names_file, task)

# Where models come from, tried in this order: the first source that claims a name loads it. Each
# entry's `task` says what its models do (None: the factory's output decides).
MODELS = Catalog("model", group="advlab.models", builtin=(), noun="model source")


def model_source(name: str, *, claims: Callable[[str], bool], task: str | None,
                 usage: str) -> Callable[[Loader], Loader]:
    """Decorator: register a loader `(name, weights, **options) -> model` for the names it claims."""

    def wrap(load: Loader) -> Loader:
        MODELS.add(name, load, claims=claims, task=task, usage=usage)
        return load

    return wrap


def load_model(name: str, weights: str | None = "DEFAULT", *, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, input_size: int | None = None, num_classes: int | None = None,
               class_names_file: str | None = None, task: str | None = None) -> ImageClassifier:
    """A model by name, from the first source in `MODELS` that claims it: a torchvision classifier,
    segmenter or detector by name (`resnet50`, weights `IMAGENET1K_V2` | `DEFAULT` | `none`;
    `fcn_resnet50`, `COCO_WITH_VOC_LABELS_V1`), MTCNN, or a bring-your-own factory
    `path/to/file.py:factory` / `package.module:factory` with a weights FILE, whose task (`None`:
    inferred from its output rank) is classification, segmentation or detection."""
    if task is not None and task not in (*OUTPUT_SHAPES, "detection"):
        raise AdvlabError(f"--task {task!r} is not supported for models; choose "
                          f"{', '.join(OUTPUT_SHAPES)} or detection")
    source = MODELS.find(lambda e: e.meta["claims"](name))
    if source is None:
        raise AdvlabError(unknown_model(name))
    kind = source.meta["task"]
    if task is not None and kind is not None and kind != task:
        raise AdvlabError(f"{name} is a {kind} model, not a {task} model; drop --task or pick a {task} model "
                          "(`advlab list` shows where models come from)")
    model = source.obj(name, weights, mean=mean, std=std, input_size=input_size, num_classes=num_classes,
                       class_names_file=class_names_file, task=task)
    if class_names_file and source.name != "factory":  # a factory's loader reads them itself
        from advlab.custom_models import read_class_names

        names = read_class_names(class_names_file)
        if len(names) != model.num_classes:
            raise AdvlabError(f"--class-names {class_names_file} has {len(names)} names but {name} has "
                              f"{model.num_classes} classes; give one name per class, in class-index order")
        model.class_names, model.named_classes = list(names), True
    return model


def unknown_model(name: str) -> str:
    known = torchvision.models.list_models(module=torchvision.models)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()"
    return f"unknown model '{name}': not a torchvision classifier and not FILE.py:factory; {hint}"


@model_source("factory", claims=lambda name: ":" in name, task=None,
              usage="path/to/file.py:factory or package.module:factory, with --weights FILE")
def _factory(name: str, weights: str | None, **options: Any) -> ImageClassifier:
    """A bring-your-own factory: a classifier, segmenter or detector (the contract in advlab/detectors.py)."""
    from advlab.custom_models import load_custom

    return load_custom(name, weights, **options)


@model_source("mtcnn", claims=lambda name: name == "mtcnn", task="detection", usage="mtcnn")
def _mtcnn(name: str, weights: str | None, *, input_size: int | None, **options: Any) -> nn.Module:
    """MTCNN, facenet-pytorch's pretrained face detector cascade (offline)."""
    from advlab.mtcnn import load_mtcnn

    return load_mtcnn(input_size)


def _segmentation_names() -> tuple[str, ...]:
    from advlab.segmenters import SEGMENTATION_MODELS

    return SEGMENTATION_MODELS


def _detection_names() -> tuple[str, ...]:
    from advlab.detectors import DETECTION_MODELS

    return DETECTION_MODELS


@model_source("torchvision-segmentation", claims=lambda name: name in _segmentation_names(), task="segmentation",
              usage="fcn_resnet50, deeplabv3_resnet50, ... with --weights COCO_WITH_VOC_LABELS_V1 | none")
def _torchvision_segmenter(name: str, weights: str | None, *, mean: Sequence[float] | None,
                           std: Sequence[float] | None, **options: Any) -> nn.Module:
    """torchvision's semantic segmentation models by name, through its weights API."""
    from advlab.segmenters import load_torchvision_segmenter

    return load_torchvision_segmenter(name, weights, mean=mean, std=std)


@model_source("torchvision-detection", claims=lambda name: name in _detection_names(), task="detection",
              usage="fasterrcnn_resnet50_fpn, ... with --weights COCO_V1 | none")
def _torchvision_detector(name: str, weights: str | None, *, input_size: int | None, **options: Any) -> nn.Module:
    """torchvision's two-stage detectors (the Faster R-CNN family) by name, through its weights API."""
    from advlab.detectors import load_torchvision_detector

    return load_torchvision_detector(name, weights, input_size)


@model_source("torchvision", claims=lambda name: name in torchvision.models.list_models(module=torchvision.models),
              task="classification", usage="resnet50, mobilenet_v2, ... with --weights IMAGENET1K_V1 | DEFAULT | none")
def _torchvision_classifier(name: str, weights: str | None, *, mean: Sequence[float] | None,
                            std: Sequence[float] | None, input_size: int | None, **options: Any) -> ImageClassifier:
    """torchvision's classifiers by name, through its weights API (offline: the weights cached here)."""
    return _load_torchvision(name, weights, mean=mean, std=std, input_size=input_size)


# ---------------------------------------------------------------- torchvision
def _load_torchvision(name: str, weights: str | None, *, mean: Sequence[float] | None,
                      std: Sequence[float] | None, input_size: int | None) -> ImageClassifier:
    if weights is None or str(weights).lower() == "none":
        net = torchvision.models.get_model(name, weights=None)
        return _wrap(net, name, "none", mean or (0.485, 0.456, 0.406), std or (0.229, 0.224, 0.225),
                     input_size or 224, [str(i) for i in range(_out_features(net))], named_classes=False)
    net, w = build_with_weights(name, weights)
    preset = w.transforms()
    size = input_size or _first(getattr(preset, "crop_size", None)) or 224
    return _wrap(net, name, w.name, mean or preset.mean, std or preset.std, size, list(w.meta["categories"]))


def _in_channels(net: nn.Module, input_size: int | None = None) -> int:
    """Input channels, as the weights say: the first conv kernel (out, in, kh, kw), or for a
    perceptron the first layer's width over the image area."""
    for p in net.parameters():
        if p.dim() == 4:
            return int(p.shape[1])
    first = next((m for m in net.modules() if isinstance(m, nn.Linear)), None)
    if first is not None and input_size and first.in_features % (input_size * input_size) == 0:
        return first.in_features // (input_size * input_size)
    return 3


OUTPUT_SHAPES = {"classification": (2, "(N, classes)"), "segmentation": (4, "(N, classes, H, W)")}


def check_logits(out: object, who: str, batch: int, task: str | None = "classification") -> str:
    """A model's output must be float logits (batch, classes) for a classifier or (batch, classes, H, W)
    for a segmenter (`task=None`: either); else one line saying what came back. Returns the task."""
    wanted = [task] if task is not None else list(OUTPUT_SHAPES)
    shapes = " or ".join(OUTPUT_SHAPES[t][1] for t in wanted)
    if not isinstance(out, torch.Tensor):
        kind = type(out).__name__
        raise AdvlabError(f"{who} returned a {kind}, not a tensor of logits {shapes}; make forward() return "
                          f"only the logits (e.g. the first element of the {kind})")
    found = next((t for t in wanted if out.dim() == OUTPUT_SHAPES[t][0]), None)
    if found is None or out.shape[0] != batch or not out.is_floating_point():
        if task is not None and out.dim() in (2, 4) and out.shape[0] == batch and out.is_floating_point():
            other = "classification" if out.dim() == 2 else "segmentation"
            raise AdvlabError(f"{who} returns {other} logits of shape {tuple(out.shape)}, but the task is {task}; "
                              f"use --task {other} (or a {task} model)")
        raise AdvlabError(f"{who} returned {out.dtype} of shape {tuple(out.shape)} for {batch} images; a model "
                          f"must return float logits of shape {shapes}")
    return found


def _first(value: object) -> int | None:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return int(value) if value is not None else None


def _out_features(net: nn.Module) -> int:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 1000


def _wrap(net: nn.Module, name: str, weights: str, mean: Sequence[float], std: Sequence[float],
          input_size: int | None, class_names: Sequence[str], named_classes: bool = True,
          task: str = "classification") -> ImageClassifier:
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    wrapper = ImageSegmenter if task == "segmentation" else ImageClassifier
    return wrapper(net, name=name, weights=weights, mean=mean, std=std, input_size=input_size,
                           class_names=class_names, in_channels=_in_channels(net, input_size),
                           named_classes=named_classes).eval()
