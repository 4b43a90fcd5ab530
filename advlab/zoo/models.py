"""Where models come from: `load_model` dispatches a name to
torchvision's classifiers (here), segmenters (`advlab.zoo.segmenters`), detectors (`advlab.zoo.detectors`),
MTCNN (`advlab.zoo.mtcnn`) or a bring-your-own factory (`advlab.zoo.custom_models`); torchvision weights are
resolved by `advlab.zoo.torchvision_weights`.

Every classifier and segmenter comes back wrapped (`advlab.zoo.wrappers`).
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from typing import Any

import torchvision
from torch import nn

from advlab.core.catalog import Catalog
from advlab.core.errors import AdvlabError
from advlab.core.threat import ThreatModel
from advlab.zoo.torchvision_weights import build_with_weights
from advlab.zoo.wrappers import WRAPPERS, ImageClassifier, wrap

# (name, weights, *, mean, std, input_size, num_classes, class_names_file, task, dataset, threat) -> model
Loader = Callable[..., nn.Module]
ThreatOf = Callable[[str, "str | None"], "ThreatModel | None"]  # (name, dataset) -> the threat model it was made for

# Where models come from, tried in this order: the first source that claims a name loads it. Each
# entry's `task` says what its models do (None: the factory's output decides).
MODELS = Catalog("model", group="advlab.models", builtin=(), noun="model source")


def model_source(name: str, *, claims: Callable[[str], bool], task: str | None, usage: str,
                 threat_of: ThreatOf | None = None) -> Callable[[Loader], Loader]:
    """Decorator: register a loader `(name, weights, **options) -> model` for the names it claims;
    `threat_of` says the threat model a source's model was made for (a leaderboard's), where it knows one."""

    def wrap(load: Loader) -> Loader:
        MODELS.add(name, load, claims=claims, task=task, usage=usage, threat_of=threat_of)
        return load

    return wrap


def load_model(name: str, weights: str | None = "DEFAULT", *, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, input_size: int | None = None, num_classes: int | None = None,
               class_names_file: str | None = None, task: str | None = None, dataset: str | None = None,
               threat: ThreatModel | None = None) -> ImageClassifier:
    """A model by name, from the first source in `MODELS` that claims it: a torchvision classifier,
    segmenter or detector by name (`resnet50`, weights `IMAGENET1K_V2` | `DEFAULT` | `none`;
    `fcn_resnet50`, `COCO_WITH_VOC_LABELS_V1`), MTCNN, or a bring-your-own factory
    `path/to/file.py:factory` / `package.module:factory` with a weights FILE, whose task (`None`:
    inferred from its output rank) is classification, segmentation or detection. `dataset` and `threat` pick
    a RobustBench entry (`robustbench:NAME`: its benchmark dataset, and the threat model of the zoo's entry)."""
    known = sorted({e.meta["task"] for e in MODELS if e.meta["task"]} | {w.task for w in WRAPPERS})
    if task is not None and task not in known:
        raise AdvlabError(f"--task {task!r} is no model's task; choose {', '.join(known)}")
    source = MODELS.find(lambda e: e.meta["claims"](name))
    if source is None:
        raise AdvlabError(unknown_model(name))
    kind = source.meta["task"]
    if task is not None and kind is not None and kind != task:
        raise AdvlabError(f"{name} is a {kind} model, not a {task} model; drop --task or pick a {task} model "
                          "(`advlab list` shows where models come from)")
    benchmark = {"dataset": dataset, "threat": threat} if source.meta["threat_of"] else {}  # a leaderboard's zoo
    if dataset is not None and not benchmark:
        raise AdvlabError(f"--dataset picks a RobustBench model's benchmark; {name} is not one: drop --dataset")
    model = source.obj(name, weights, mean=mean, std=std, input_size=input_size, num_classes=num_classes,
                       class_names_file=class_names_file, task=task, **benchmark)
    if class_names_file and source.name != "factory":  # a factory's loader reads them itself
        from advlab.zoo.custom_models import read_class_names

        names = read_class_names(class_names_file)
        if len(names) != model.num_classes:
            raise AdvlabError(f"--class-names {class_names_file} has {len(names)} names but {name} has "
                              f"{model.num_classes} classes; give one name per class, in class-index order")
        model.class_names, model.named_classes = list(names), True
    return model


def model_threat(name: str, dataset: str | None = None) -> ThreatModel | None:
    """The threat model a named model was made for, where its source knows one (a RobustBench entry's
    leaderboard threat model); None for every other model."""
    source = MODELS.find(lambda e: e.meta["claims"](name))
    threat_of = source.meta.get("threat_of") if source is not None else None
    return threat_of(name, dataset) if threat_of is not None else None


def unknown_model(name: str) -> str:
    known = torchvision.models.list_models(module=torchvision.models)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()"
    return (f"unknown model '{name}': not a torchvision classifier, timm:NAME, hf:ORG/NAME, robustbench:NAME or "
            f"FILE.py:factory; {hint}")


MEMORY = "memory"  # the prefix of models a Python caller passed as objects (`advlab.evaluate`)


@model_source(MEMORY, claims=lambda name: name.startswith(f"{MEMORY}:"), task=None,
              usage="memory:NAME, a model passed to advlab.evaluate (from Python only)")
def _in_memory(name: str, weights: str | None, **options: Any) -> nn.Module:
    """A model a Python caller held: it cannot be built again from its name."""
    raise AdvlabError(f"--model {name}: this run's model was a Python object; continue the run from Python with "
                      "advlab.evaluate(model, data, out=RUN_DIR) on the same model")


def _timm_name(name: str) -> bool:
    """timm:NAME, hf-hub:ORG/NAME, timm/NAME (timm's organisation on the Hub), or a bare timm name with a
    pretrained tag (resnet18.a1_in1k) where timm is installed and knows it."""
    if name.startswith(("timm:", "hf-hub:", "timm/")):
        return True
    if ":" in name or "." not in name or name.endswith(".py"):
        return False
    from advlab.zoo.timm_models import knows

    return knows(name)


@model_source("timm", claims=_timm_name, task="classification",
              usage="timm:NAME[.TAG] or hf-hub:ORG/NAME (pip install 'advlab[timm]'), --weights FILE | DEFAULT | none")
def _timm(name: str, weights: str | None, **options: Any) -> nn.Module:
    """timm's models by name, with their pretrained_cfg's preprocessing (Wightman, PyTorch Image Models)."""
    from advlab.zoo.timm_models import load_timm

    return load_timm(name, weights, **options)


def _hub_name(name: str) -> bool:
    """hf:ORG/NAME or hf:PATH, and a bare ORG/NAME of the Hugging Face Hub (not timm's organisation, whose
    models load through timm as hf-hub:timm/NAME, and not a file)."""
    if name.startswith("hf:"):
        return True
    org, slash, model = name.partition("/")
    return bool(org and slash and model) and ":" not in name and "/" not in model and org != "timm" \
        and not name.endswith(".py")


@model_source("transformers", claims=_hub_name, task="classification",
              usage="ORG/NAME, hf:ORG/NAME or hf:DIR, a transformers image classifier (pip install "
                    "'advlab[transformers]'), --weights DEFAULT | none")
def _transformers(name: str, weights: str | None, **options: Any) -> nn.Module:
    """Hugging Face transformers' image classifiers with their image processor's preprocessing."""
    from advlab.zoo.hf_models import load_transformers

    return load_transformers(name, weights, **options)


def _robustbench_threat(name: str, dataset: str | None) -> ThreatModel | None:
    from advlab.zoo.robustbench_models import default_threat

    return default_threat(name, dataset)


@model_source("robustbench", claims=lambda name: name.startswith("robustbench:"), task="classification",
              threat_of=_robustbench_threat,
              usage="robustbench:NAME with --dataset cifar10 | cifar100 | imagenet (pip install "
                    "'advlab[robustbench]'), --weights DEFAULT | DIR | none")
def _robustbench(name: str, weights: str | None, **options: Any) -> nn.Module:
    """RobustBench's model zoo through its own load_model, with its leaderboard entry (Croce et al., NeurIPS
    2021 Datasets and Benchmarks)."""
    from advlab.zoo.robustbench_models import load_robustbench

    return load_robustbench(name, weights, **options)


@model_source("factory", claims=lambda name: ":" in name, task=None,
              usage="path/to/file.py:factory or package.module:factory, with --weights FILE")
def _factory(name: str, weights: str | None, **options: Any) -> ImageClassifier:
    """A bring-your-own factory: a classifier, segmenter or detector (the contract in advlab/zoo/detectors.py)."""
    from advlab.zoo.custom_models import load_custom

    return load_custom(name, weights, **options)


@model_source("mtcnn", claims=lambda name: name == "mtcnn", task="detection", usage="mtcnn")
def _mtcnn(name: str, weights: str | None, *, input_size: int | None, **options: Any) -> nn.Module:
    """MTCNN, facenet-pytorch's pretrained face detector cascade (offline)."""
    from advlab.zoo.mtcnn import load_mtcnn

    return load_mtcnn(input_size)


def _lab_names() -> tuple[str, ...]:
    from advlab.zoo.lab_nets import LAB_NETS

    return tuple(LAB_NETS)


@model_source("lab", claims=lambda name: name in _lab_names(), task=None,
              usage="fashion_segnet, fashion_detector (weights shipped); fashion_cnn, fashion_mlp with --weights FILE")
def _lab_net(name: str, weights: str | None, **options: Any) -> nn.Module:
    """The lab's own nets by name, with the normalisation, input size and classes of their data."""
    from advlab.zoo.lab_nets import load_lab_net

    return load_lab_net(name, weights, **options)


def _segmentation_names() -> tuple[str, ...]:
    from advlab.zoo.segmenters import SEGMENTATION_MODELS

    return SEGMENTATION_MODELS


def _detection_names() -> tuple[str, ...]:
    from advlab.zoo.detectors import DETECTION_MODELS

    return DETECTION_MODELS


@model_source("torchvision-segmentation", claims=lambda name: name in _segmentation_names(), task="segmentation",
              usage="fcn_resnet50, deeplabv3_resnet50, ... with --weights COCO_WITH_VOC_LABELS_V1 | none")
def _torchvision_segmenter(name: str, weights: str | None, *, mean: Sequence[float] | None,
                           std: Sequence[float] | None, **options: Any) -> nn.Module:
    """torchvision's semantic segmentation models by name, through its weights API."""
    from advlab.zoo.segmenters import load_torchvision_segmenter

    return load_torchvision_segmenter(name, weights, mean=mean, std=std)


@model_source("torchvision-detection", claims=lambda name: name in _detection_names(), task="detection",
              usage="fasterrcnn_resnet50_fpn, ... with --weights COCO_V1 | none")
def _torchvision_detector(name: str, weights: str | None, *, input_size: int | None, **options: Any) -> nn.Module:
    """torchvision's two-stage detectors (the Faster R-CNN family) by name, through its weights API."""
    from advlab.zoo.detectors import load_torchvision_detector

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
        return wrap(net, name, "none", mean or (0.485, 0.456, 0.406), std or (0.229, 0.224, 0.225),
                     input_size or 224, [str(i) for i in range(_out_features(net))], named_classes=False)
    net, w = build_with_weights(name, weights)
    preset = w.transforms()
    size = input_size or _first(getattr(preset, "crop_size", None)) or 224
    return wrap(net, name, w.name, mean or preset.mean, std or preset.std, size, list(w.meta["categories"]))


def _first(value: object) -> int | None:
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return int(value) if value is not None else None


def _out_features(net: nn.Module) -> int:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 1000
