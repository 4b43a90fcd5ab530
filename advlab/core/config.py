"""Typed run configuration: the dataclasses a run is described by (from YAML, `advlab.core.config_yaml`,
or from the command line, `advlab.cli.args`), with every default filled, and the checks that need no
model or data."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from advlab.core.errors import AdvlabError
from advlab.core.threat import ThreatModel


@dataclass
class ModelSpec:
    name: str = "mobilenet_v2"  # torchvision classifier, or FILE.py:factory / package.module:factory
    weights: str | None = "IMAGENET1K_V1"  # torchvision weights enum name, DEFAULT, none, or a FILE for custom models
    mean: list[float] | None = None  # normalisation; None = the weights' own (or 0 for custom models)
    std: list[float] | None = None  # None = the weights' own (or 1 for custom models)
    input_size: int | None = None  # square side the model expects; None = the weights' own crop size
    num_classes: int | None = None  # passed to a custom factory as num_classes=
    class_names: str | None = None  # file with one class name per line (custom models)
    task: str | None = None  # classification | segmentation | detection; None = inferred from the model
    dataset: str | None = None  # a RobustBench model's: cifar10 | cifar100 | imagenet; None = the one it is in


@dataclass
class DataSpec:
    source: str = "imagenet-samples"  # imagenet-samples | photos | folder:PATH | tensors:FILE
    n: int | None = None  # first n images in the source's fixed order; None = all
    eval_source: str | None = None  # held-out images for universal perturbations (fooling ratio on unseen data)
    eval_n: int | None = None  # first n held-out images; None = all


@dataclass
class AttackSpec:
    method: str  # a registered attack (`advlab list`)
    target_class: int | None = None  # targeted mode: push every image to this class; None = untargeted
    starting_image: str | None = None  # targeted decision-based attacks: start here (its class is the target)
    target_mask: str | None = None  # segmentation: a shape (PNG) painted with another class, the rest background
    params: dict[str, Any] = field(default_factory=dict)  # the attack's own settings (its __init__ keywords)


@dataclass
class DefenseSpec:
    method: str  # a registered defense (`advlab list`)
    adaptive: bool = True  # also run every attack end to end on the defended model (the adaptive setting)
    params: dict[str, Any] = field(default_factory=dict)  # the defense's own settings (its __init__ keywords)


@dataclass
class RunConfig:
    name: str = "quickstart"  # run directory prefix and report title
    seed: int = 0  # recorded; every random draw of a run derives from it
    device: str = "auto"  # auto | cpu | cuda | cuda:K
    precision: str = "fp32"  # fp32 | tf32 | bf16 (autocast on the model forward)
    batch_size: int = 32  # images sent to an attack at once (its own batch is this times its candidates)
    out: str | None = None  # run directory; None = reports/<name>-<YYYYmmdd-HHMMSS>
    save_adversarials: bool = False  # also every adversarial image (8-bit) in arrays/<tag>.adversarials/ shards
    model: ModelSpec = field(default_factory=ModelSpec)
    models: list[ModelSpec] = field(default_factory=list)  # several models: each attacked; UAPs cross-evaluated
    data: DataSpec = field(default_factory=DataSpec)
    attacks: list[AttackSpec] = field(default_factory=lambda: [AttackSpec(default_attack())])
    defenses: list[DefenseSpec] = field(default_factory=list)  # each evaluated against every attack
    # threat models (norm, eps) of the robustness matrices: one matrix each, an attack counting only where
    # its adversarial lies within eps; empty = one per distinct (norm, eps) of the bounded attacks
    threat: list[ThreatModel] = field(default_factory=list)
    # the binarization test (Zimmermann et al., NeurIPS 2022) of every attack row on this many images; 0 = off
    binarization_test: int = 0
    # what advlab chose on the user's behalf (e.g. the segmenter for --method dag without --model):
    # logged once and recorded in results.json
    notes: list[str] = field(default_factory=list)


def default_attack() -> str:
    """The attack a config without `attacks` runs: the one whose plugin declares itself the default."""
    from advlab.core.registry import ATTACKS

    found = ATTACKS.find(lambda e: bool(e.meta.get("default")))
    if found is None:
        raise AdvlabError("no attack declares itself the default; name one under `attacks:`")
    return found.name


def default_weights(model_name: str) -> str | None:
    """Weights when a model is named without them: torchvision's DEFAULT, none for custom factories."""
    return None if ":" in model_name else "DEFAULT"


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def validate(cfg: RunConfig) -> None:
    """Checks that need no model or data; every message names the field (and its flag)."""
    if cfg.precision not in ("fp32", "tf32", "bf16"):
        raise AdvlabError(f"precision (--precision) must be fp32, tf32 or bf16, got {cfg.precision!r}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed < 2**63:
        raise AdvlabError(f"seed (--seed) must be an integer >= 0, got {cfg.seed!r}")
    if cfg.batch_size < 1:
        raise AdvlabError(f"batch_size (--batch-size) must be >= 1, got {cfg.batch_size}")
    test = cfg.binarization_test
    if not isinstance(test, int) or isinstance(test, bool) or test < 0:
        raise AdvlabError(f"binarization_test (--binarization-test) is a number of images (e.g. 50), 0 for off; "
                          f"got {test!r}")
    if not RUN_NAME.fullmatch(cfg.name) or ".." in cfg.name:
        raise AdvlabError(f"name (--name) {cfg.name!r} must be a plain file name (letters, digits, '_', '-', "
                          "'.'; no '/' or '..'): it names the run directory under reports/")
    for key in ("n", "eval_n"):
        value = getattr(cfg.data, key)
        if value is not None and value < 1:
            raise AdvlabError(f"data.{key} (-{'n' if key == 'n' else '-eval-n'}) must be >= 1, got {value}")
    for i, model in enumerate([cfg.model, *cfg.models]):
        where = "model" if i == 0 else f"models[{i - 1}]"
        for key in ("input_size", "num_classes"):
            value = getattr(model, key)
            if value is not None and value < 1:
                raise AdvlabError(f"{where}.{key} (--{key.replace('_', '-')}) must be >= 1, got {value}")
    for i, attack in enumerate(cfg.attacks):
        target = attack.target_class
        if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
            raise AdvlabError(f"attacks[{i}].target_class (--target-class) must be a class index >= 0, "
                              f"got {target!r}")
