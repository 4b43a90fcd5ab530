"""RobustBench's model zoo by name (Croce, Andriushchenko, Sehwag, Debenedetti, Flammarion, Chiang, Mittal &
Hein, "RobustBench: a standardized adversarial robustness benchmark", NeurIPS 2021 Datasets and Benchmarks):
`robustbench:NAME` with `--dataset cifar10|cifar100|imagenet`, loaded by robustbench's own `load_model` into a
`model_dir` cache in its layout (`MODEL_DIR/<dataset>/<threat model>/<NAME>.pt`).

RobustBench models normalise inside, so the wrapper adds nothing; ImageNet models decode image files with the
entry's own preprocessing (robustbench's `get_preprocessing`). The leaderboard entry's threat model (l_inf 8/255
on CIFAR, 4/255 on ImageNet, l2 0.5 on CIFAR-10) becomes the run's default threat model, and its published
clean and AutoAttack accuracy (the leaderboard tables robustbench ships in its package description) go into
results.json beside the lab's own.

Weights: DEFAULT (robustbench downloads them from Google Drive into `ROBUSTBENCH_DIR`, default
`<torch hub dir>/robustbench`), a DIR (a model_dir in robustbench's layout), or none (the architecture, random).
Every checkpoint is read with `weights_only=True` before robustbench loads it, so a download that is not a
model file (Google Drive's HTML page, a truncated file) is one line naming the file and what to do.

Installing: `pip install 'advlab[robustbench]' && pip install --no-deps robustbench==1.1.1`. robustbench 1.1.1's
wheel pins timm==1.0.9 (whose Hugging Face loading breaks with huggingface_hub 2) and imports an `autoattack`
module that no registry package provides, so it goes in without its pins; its package `__init__` (which
imports that `autoattack`) is skipped when it fails, and its one `pkg_resources.resource_filename` call gets a
stand-in where setuptools no longer ships `pkg_resources` (setuptools >= 81).
"""
from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import os
import re
import sys
import types
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.core.errors import AdvlabError, first_line
from advlab.core.threat import ThreatModel
from advlab.data.benchmarks import ROBUSTBENCH_EXTRA
from advlab.zoo.torchvision_weights import imagenet_class_names
from advlab.zoo.wrappers import ImageClassifier, check_logits

PREFIX = "robustbench:"
EXTRA = ROBUSTBENCH_EXTRA
DATASETS = ("cifar10", "cifar100", "imagenet")
THREAT_MODELS = {"linf": "Linf", "l2": "L2"}  # advlab's norm -> robustbench's ThreatModel value
# The leaderboards' threat models (the RobustBench paper, section 3): an entry's default threat model.
LEADERBOARD_EPS = {("cifar10", "Linf"): 8 / 255, ("cifar10", "L2"): 0.5, ("cifar100", "Linf"): 8 / 255,
                   ("imagenet", "Linf"): 4 / 255}
INPUT_SIZE = {"cifar10": 32, "cifar100": 32}
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
GDRIVE = "https://drive.google.com/uc?id={}"


@dataclass(frozen=True)
class Entry:
    """A RobustBench model: where it sits in the zoo, its leaderboard threat model and published accuracies."""

    name: str
    dataset: str  # cifar10 | cifar100 | imagenet
    threat_model: str  # robustbench's: Linf | L2 | corruptions
    threat: ThreatModel | None  # the leaderboard's norm and eps (None for the corruptions leaderboard)
    clean_accuracy: float | None  # published, in [0, 1]; None where robustbench's tables do not list it
    robust_accuracy: float | None  # published AutoAttack accuracy (corruptions: accuracy under corruptions)

    def published(self) -> dict[str, Any]:
        """For results.json: the leaderboard's figures with their threat model and source."""
        return {"source": f"RobustBench leaderboard (robustbench {_version()})", "dataset": self.dataset,
                "threat_model": self.threat.as_dict() if self.threat else self.threat_model,
                "clean_accuracy": self.clean_accuracy, "robust_accuracy": self.robust_accuracy,
                "attack": "AutoAttack" if self.threat else "common corruptions"}


def is_robustbench(name: str) -> bool:
    return name.startswith(PREFIX)


def entry(name: str, dataset: str | None = None, norm: str | None = None) -> Entry:
    """The zoo entry of `robustbench:NAME` on `dataset` (None: the one dataset whose zoo has it) for the threat
    model of `norm` where the zoo has the model under it, else its l_inf, l2 or corruptions entry."""
    model = name.removeprefix(PREFIX)
    zoo = _zoo()
    found = {d.value: [t.value for t, models in by_threat.items() if model in models]
             for d, by_threat in zoo.items()}
    found = {d: threats for d, threats in found.items() if threats}
    if dataset is not None and dataset not in DATASETS:
        raise AdvlabError(f"--dataset {dataset!r}: RobustBench has {', '.join(DATASETS)}")
    if not found or (dataset is not None and dataset not in found):
        where = f" for {dataset}" if dataset else ""
        raise AdvlabError(f"--model {name}: RobustBench has no model {model!r}{where}; {_close(model, dataset)}")
    if dataset is None:
        if len(found) > 1:
            raise AdvlabError(f"--model {name} is in RobustBench's {' and '.join(found)} zoos; pass --dataset "
                              f"{' or '.join(found)}")
        dataset = next(iter(found))
    threats = found[dataset]
    wanted = THREAT_MODELS.get(norm or "")
    threat_model = wanted if wanted in threats else next(t for t in ("Linf", "L2", *threats) if t in threats)
    eps = LEADERBOARD_EPS.get((dataset, threat_model))
    threat = ThreatModel(threat_model.lower(), eps) if eps is not None else None
    clean, robust = leaderboard(dataset, threat_model).get(model, (None, None))
    return Entry(model, dataset, threat_model, threat, clean, robust)


def load_robustbench(name: str, weights: str | None, *, dataset: str | None = None,
                     threat: ThreatModel | None = None, input_size: int | None = None,
                     **_: Any) -> ImageClassifier:
    """`robustbench:NAME` through robustbench's `load_model`, wrapped without normalisation (its models
    normalise inside), with the leaderboard entry as `model.published`."""
    found = entry(name, dataset, threat.norm if threat else None)
    modules = _robustbench()
    zoo_entry = _zoo()[modules.BenchmarkDataset(found.dataset)][modules.ThreatModel(found.threat_model)][found.name]
    if weights is not None and str(weights).lower() == "none":
        net, label = zoo_entry["model"](), "none"
    else:
        model_dir = _model_dir(weights)
        _fetch_checked(modules, found, zoo_entry, model_dir)
        try:
            net = modules.load_model(found.name, model_dir=str(model_dir), dataset=found.dataset,
                                     threat_model=found.threat_model)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            raise AdvlabError(f"--model {name}: robustbench could not load it ({type(exc).__name__}: "
                              f"{first_line(exc)})") from None
        label = str(model_dir)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    transform, size = _preprocessing(modules, found, input_size)
    channels = 3
    n_out = _output_classes(net, size, name)
    names = list(CIFAR10_CLASSES) if found.dataset == "cifar10" and n_out == 10 else _imagenet_or_index(n_out)
    model = ImageClassifier(net, name=name, weights=label, mean=(0.0,), std=(1.0,), input_size=size,
                            class_names=names, in_channels=channels,
                            named_classes=found.dataset != "cifar100")
    model.image_transform = transform
    model.preprocessing = {"source": "robustbench", "dataset": found.dataset, "threat_model": found.threat_model,
                           "transform": repr(transform).replace("\n", " ") if transform else "none"}
    model.published = found.published()
    return model.eval()


def default_threat(name: str, dataset: str | None) -> ThreatModel | None:
    """The leaderboard threat model of `robustbench:NAME` (l_inf where the zoo has it under several)."""
    return entry(name, dataset).threat


# ---------------------------------------------------------------- robustbench's package
@dataclass(frozen=True)
class _Modules:
    load_model: Any
    download: Any
    get_preprocessing: Any
    BenchmarkDataset: Any
    ThreatModel: Any


@functools.cache
def _robustbench() -> _Modules:
    """robustbench's loading code, importable with setuptools >= 81 and without the `autoattack` module its
    package `__init__` imports for `benchmark` (which advlab does not use)."""
    if importlib.util.find_spec("robustbench") is None:
        raise AdvlabError(f"robustbench:NAME models need robustbench, which is not installed: {EXTRA}")
    if importlib.util.find_spec("pkg_resources") is None and "pkg_resources" not in sys.modules:
        sys.modules["pkg_resources"] = _pkg_resources_stand_in()
    with warnings.catch_warnings():  # its architectures import timm's deprecated module paths
        warnings.simplefilter("ignore", FutureWarning)
        try:
            import robustbench  # noqa: F401
        except ImportError:  # its __init__ imports `autoattack` (robustbench.eval): load the package without it
            spec = importlib.util.find_spec("robustbench")
            assert spec is not None
            sys.modules["robustbench"] = importlib.util.module_from_spec(spec)
        try:
            from robustbench import data, utils
            from robustbench.model_zoo import model_dicts  # noqa: F401  (every architecture, imported here)
            from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
        except ImportError as exc:
            raise AdvlabError(f"robustbench is installed but cannot be imported ({first_line(exc)}); "
                              f"{EXTRA}") from None
    package = sys.modules["robustbench"]
    if not hasattr(package, "load_model"):  # `from robustbench import load_model` works after advlab, as before
        package.load_model = utils.load_model
    return _Modules(utils.load_model, utils.download_gdrive_new, data.get_preprocessing, BenchmarkDataset,
                    ThreatModel)


def _pkg_resources_stand_in() -> types.ModuleType:
    """`pkg_resources.resource_filename`, the one function of it robustbench 1.1.1 calls (loaders.py)."""
    module = types.ModuleType("pkg_resources")

    def resource_filename(package: str, resource: str) -> str:
        return str(importlib.resources.files(package).joinpath(resource))

    module.resource_filename = resource_filename  # type: ignore[attr-defined]
    return module


def _zoo() -> Any:
    _robustbench()
    from robustbench.model_zoo import model_dicts

    return model_dicts


@functools.cache
def _version() -> str:
    from importlib.metadata import version

    return version("robustbench")


@functools.cache
def leaderboard(dataset: str, threat_model: str) -> dict[str, tuple[float, float]]:
    """{model: (clean, robust accuracy)} of one leaderboard, from the tables robustbench's package description
    carries (its README's Model Zoo section); empty where it has none."""
    from importlib.metadata import metadata

    text = metadata("robustbench").get_payload() or ""  # type: ignore[attr-defined]
    headings = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet": "ImageNet"}
    section = re.split(r"^### ", text, flags=re.MULTILINE)
    body = next((s for s in section if s.startswith(headings[dataset] + "\n")), "")
    tables = re.split(r"^#### ", body, flags=re.MULTILINE)
    title = {"Linf": "Linf", "L2": "L2", "corruptions": "Common Corruptions|Corruptions"}[threat_model]
    table = next((t for t in tables if re.match(title, t)), "")
    rows = re.findall(r"\*\*([^*]+)\*\*</sup></sub>\s*\|[^|]*\|\s*<sub>([\d.]+)%</sub>\s*\|\s*<sub>([\d.]+)%</sub>",
                      table)
    return {name: (round(float(clean) / 100, 6), round(float(robust) / 100, 6)) for name, clean, robust in rows}


def _close(model: str, dataset: str | None) -> str:
    import difflib

    names = {m for d, by_threat in _zoo().items() if dataset in (None, d.value) for ms in by_threat.values()
             for m in ms}
    close = difflib.get_close_matches(model, sorted(names), n=3)
    return f"did you mean {', '.join(close)}?" if close else "see robustbench's leaderboard (robustbench.github.io)"


# ---------------------------------------------------------------- weights
def _model_dir(weights: str | None) -> Path:
    if weights is None or str(weights).upper() == "DEFAULT":
        return Path(os.environ.get("ROBUSTBENCH_DIR") or Path(torch.hub.get_dir()) / "robustbench").expanduser()
    path = Path(weights).expanduser()
    if not path.is_dir():
        raise AdvlabError(f"--weights {weights}: for a robustbench model give DEFAULT (downloaded into "
                          "$ROBUSTBENCH_DIR), none, or the model_dir (a folder in robustbench's layout "
                          "DIR/<dataset>/<threat model>/<NAME>.pt) that exists")
    return path


def _fetch_checked(modules: _Modules, found: Entry, zoo_entry: dict[str, Any], model_dir: Path) -> None:
    """Download the entry's checkpoint file(s) where absent (robustbench's own Google Drive download) and
    read each with `weights_only=True`: a file that is not a model is one line, never unpickled."""
    ids = zoo_entry.get("gdrive_id")
    if ids is None:
        return  # a timm-hosted model or a torchvision one: robustbench loads it from its hub
    folder = model_dir / found.dataset / found.threat_model
    files = [(folder / f"{found.name}.pt", ids)] if not isinstance(ids, list) else \
        [(folder / f"{found.name}.pt_m{i}.pt", gid) for i, gid in enumerate(ids)]
    for path, gid in files:
        if not path.is_file():
            folder.mkdir(parents=True, exist_ok=True)
            try:
                modules.download(gid, path)
            except Exception as exc:  # gdown and requests raise many kinds
                path.unlink(missing_ok=True)
                raise AdvlabError(f"robustbench:{found.name}: the download of {path} from {GDRIVE.format(gid)} "
                                  f"failed ({type(exc).__name__}: {first_line(exc)}); download it there by hand, "
                                  "or pass --weights DIR with a folder that holds it") from None
            if not path.is_file():
                raise AdvlabError(f"robustbench:{found.name}: the download of {path} from {GDRIVE.format(gid)} "
                                  "wrote nothing; download it there by hand, or pass --weights DIR")
        _check_checkpoint(path, gid)


def _check_checkpoint(path: Path, gid: str) -> None:
    with path.open("rb") as f:
        head = f.read(512).lstrip().lower()
    fix = f"delete it and download {GDRIVE.format(gid)} again (by hand where Google Drive refuses)"
    if head.startswith((b"<!doctype html", b"<html", b"<")):
        raise AdvlabError(f"{path} is an HTML page, not a model file (Google Drive's answer when a file's "
                          f"download quota is exceeded); {fix}")
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a truncated or foreign file: one line
        raise AdvlabError(f"{path} is not a readable model file ({type(exc).__name__}: {first_line(exc)}; a "
                          f"truncated download?); {fix}") from None


# ---------------------------------------------------------------- inputs and outputs
def _preprocessing(modules: _Modules, found: Entry, input_size: int | None) -> tuple[Any, int]:
    """(how image files are decoded for the entry, its input side): ToTensor at 32 px on CIFAR; on ImageNet the
    entry's own resize/crop (robustbench's get_preprocessing), its side that of the crop."""
    if found.dataset != "imagenet":
        return None, input_size or INPUT_SIZE[found.dataset]
    transform = modules.get_preprocessing(modules.BenchmarkDataset(found.dataset),
                                          modules.ThreatModel(found.threat_model), found.name, None)
    crops = [t for t in getattr(transform, "transforms", []) if hasattr(t, "size") and "Crop" in type(t).__name__]
    size = input_size or (int(_side(crops[-1].size)) if crops else 224)
    return transform, size


def _side(size: Any) -> int:
    return int(size[0]) if isinstance(size, (list, tuple)) else int(size)


def _output_classes(net: nn.Module, size: int, name: str) -> int:
    with torch.no_grad():
        out = net(torch.zeros(1, 3, size, size))
    check_logits(out, f"model {name}", batch=1)
    return int(out.shape[1])


def _imagenet_or_index(n: int) -> list[str]:
    return list(imagenet_class_names()) if n == 1000 else [str(i) for i in range(n)]


__all__ = ["Entry", "default_threat", "entry", "is_robustbench", "leaderboard", "load_robustbench"]
