"""Bring-your-own models: `--model path/to/file.py:factory` or `package.module:factory` with a
`--weights FILE` state_dict (loaded with `weights_only=True`). The factory's network is probed once
to tell a classifier ((N, K) logits) from a segmenter ((N, K, H, W)), or taken as a detector (a
torchvision two-stage detector, or any object with the contract of `advlab.zoo.detectors`); every
failure of user code is one line.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from advlab.core.errors import AdvlabError, first_line
from advlab.zoo.wrappers import check_logits, in_channels, input_dtype, wrap, wrapper_for

log = logging.getLogger("advlab")


def load_custom(spec: str, weights: str | None, *, mean: Sequence[float] | None, std: Sequence[float] | None,
                 input_size: int | None, num_classes: int | None, class_names_file: str | None,
                 task: str | None) -> nn.Module:
    """The wrapped model a factory builds, its weights loaded, its task probed (or given)."""
    factory = _import_factory(spec)
    takes_num_classes = _accepts(factory, "num_classes")
    try:
        net = factory(num_classes=num_classes) if num_classes and takes_num_classes else factory()
    except (Exception, SystemExit) as exc:  # user code: any failure becomes one line
        raise AdvlabError(f"model factory {spec} raised {type(exc).__name__}: {first_line(exc)}; fix the factory "
                          "(it is called with no arguments, or num_classes= when it accepts it)") from exc
    if not isinstance(net, nn.Module):
        raise AdvlabError(f"model factory {spec} returned {type(net).__name__}, not a torch.nn.Module")
    stated = getattr(net, "weights_source", None)  # a factory that loads its own weights may say where from
    if weights and str(weights).lower() != "none":
        _load_weights_file(net, Path(weights))
        label = str(weights)
    elif weights is None and isinstance(stated, str) and stated.strip():
        label = stated.strip()
    elif weights is None:
        label = "factory"
        log.warning("--model %s has no --weights: using the weights its factory builds (random unless it loads its "
                    "own; a factory that does can say so with a weights_source attribute); pass --weights FILE, or "
                    "--weights none to say the random initialisation is meant", spec)
    else:
        label = "none"
    classes = read_class_names(class_names_file) if class_names_file else None
    return wrap_network(net, spec, label, mean=mean, std=std, input_size=input_size, num_classes=num_classes,
                        class_names=classes, task=task, class_names_file=class_names_file)


def wrap_network(net: nn.Module, spec: str, label: str, *, mean: Sequence[float] | None,
                 std: Sequence[float] | None, input_size: int | None, num_classes: int | None,
                 class_names: Sequence[str] | None, task: str | None,
                 class_names_file: str | None = None, probe_size: int | None = None) -> nn.Module:
    """A network that takes normalised images, wrapped as advlab sees every model ([0, 1] images in,
    `mean`/`std` (default 0 and 1: the images as they are) and `input_size` applied by the wrapper), its
    task probed from one forward pass on `probe_size` images (default `input_size`, else 32 px) or given;
    `spec` names it in messages and results."""
    net.eval()
    _check_parameters(net, spec)
    classes = list(class_names) if class_names is not None else None
    names_source = f"class-names file {class_names_file}" if class_names_file else "class_names"
    from advlab.zoo.detectors import ImageDetector

    if task == ImageDetector.task or (task is None and _is_detector(net)):
        if mean is not None or std is not None:
            raise AdvlabError(f"--mean/--std are not used by detectors: {spec} normalises its own inputs (a torchvision "
                              "detector's transform, or the contract object itself); drop them")
        return _wrap_detector(net, spec, label, classes, input_size, num_classes)
    channels = in_channels(net, input_size or probe_size)
    n_out, task = _probe_classes(net, channels, input_size or probe_size or 32, spec, task)
    if num_classes and n_out != num_classes:
        raise AdvlabError(f"--num-classes {num_classes} but the model built by {spec} outputs {n_out} classes; "
                          f"drop --num-classes or fix the factory")
    if classes is not None and len(classes) != n_out:
        raise AdvlabError(f"{names_source} has {len(classes)} names but the model "
                          f"outputs {n_out} classes; give one name per line for each class")
    return wrap(net, spec, label, mean or (0.0,), std or (1.0,), input_size,
                 classes or [str(i) for i in range(n_out)], named_classes=classes is not None, task=task)


def _check_parameters(net: nn.Module, spec: str) -> None:
    """Parameters advlab can evaluate: with values, not on the meta device."""
    if any(t.is_meta for t in [*net.parameters(), *net.buffers()]):
        raise AdvlabError(f"model {spec} has parameters on the meta device (no values): build it on the CPU, or load "
                          "its weights with load_state_dict(state, assign=True) before handing it to advlab")


def _is_detector(net: nn.Module) -> bool:
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    return isinstance(net, GeneralizedRCNN) or all(callable(getattr(net, m, None))
                                                   for m in ("proposals", "proposal_logits", "detect"))


def _wrap_detector(net: nn.Module, spec: str, label: str, classes: list[str] | None,
                   input_size: int | None, num_classes: int | None) -> nn.Module:
    """A bring-your-own detector: a torchvision two-stage detector, or an object with the detection
    contract (advlab.zoo.detectors); a classifier or segmenter given --task detection is one line. The
    class count comes from the box predictor, the object's own `class_names`, --class-names or
    --num-classes, which must agree; a detector that states none of them is one line."""
    from advlab.zoo.detectors import ImageDetector

    if not _is_detector(net):
        raise AdvlabError(f"model {spec} is not a detector (no torchvision two-stage detector, no proposals/"
                          "proposal_logits/detect methods); drop --task detection or see advlab/zoo/detectors.py")
    own = getattr(net, "class_names", None)  # a factory may name its classes (the lab's detector does)
    if own is not None and not (isinstance(own, (list, tuple)) and own and all(isinstance(c, str) for c in own)):
        raise AdvlabError(f"detector {spec} has class_names = {own!r}; make it a list of class names, background "
                          "first, or remove it and pass --class-names FILE or --num-classes K")
    predictor = getattr(getattr(getattr(net, "roi_heads", None), "box_predictor", None), "cls_score", None)
    counts = {"its box predictor": predictor.out_features if predictor is not None else None,
              "its class_names": len(own) if own else None, "--class-names": len(classes) if classes else None,
              "--num-classes": num_classes}
    given = {source: n for source, n in counts.items() if n is not None}
    if not given:
        raise AdvlabError(f"detector {spec} does not say how many classes it has (background included): give it a "
                          "class_names attribute (background first), or pass --class-names FILE or --num-classes K")
    if len(set(given.values())) > 1:
        said = ", ".join(f"{source} {n}" for source, n in given.items())
        raise AdvlabError(f"detector {spec}: the class counts disagree ({said}, background included); make them "
                          "agree or drop the flag")
    count = next(iter(given.values()))
    if classes is None and own:
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
    return any((p.name == keyword and p.kind is not inspect.Parameter.POSITIONAL_ONLY)
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
        folder = str(path.resolve().parent)  # its neighbours import as `python FILE` would have them
        if folder not in sys.path:
            sys.path.insert(0, folder)
        try:
            mspec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:  # user code, SystemExit included
            raise AdvlabError(f"model file {path} failed to import: {type(exc).__name__}: {first_line(exc)}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # user code
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
    own = net.state_dict()
    if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
        state = {k.removeprefix("module."): v for k, v in state.items()}
        log.warning("weights %s were saved from a DataParallel/DistributedDataParallel wrapper: their 'module.' "
                    "prefix is dropped (save model.module.state_dict() to avoid this note)", path)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:2]
        raise AdvlabError(f"weights {path} do not fit the model: {' '.join(first)}; check --model and "
                          "--num-classes") from exc


def _probe_classes(net: nn.Module, channels: int, size: int, spec: str, task: str | None) -> tuple[int, str]:
    """(number of classes, task) from one forward pass on a zero image: (N, K) logits make a classifier,
    (N, K, H, W) a segmenter (or the given `task`, checked); anything else is one line."""
    with torch.no_grad():
        try:
            out = net(torch.zeros(2, channels, size, size, dtype=input_dtype(net)))
        except Exception as exc:  # user code
            raise AdvlabError(f"model {spec} fails on a {channels}x{size}x{size} input ({type(exc).__name__}: "
                              f"{first_line(exc)}); set --input-size to what it expects") from exc
    if isinstance(out, dict) and isinstance(out.get("out"), torch.Tensor):
        out = out["out"]  # torchvision's segmentation models
    found = check_logits(out, f"model {spec}", batch=2, kind=wrapper_for(task) if task is not None else None)
    return int(out.shape[1]), found.task


def read_class_names(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise AdvlabError(f"class-names file {p} does not exist")
    return [line.strip() for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
