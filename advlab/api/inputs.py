"""What a Python caller hands the library, made into what a run is described by: a model object or
name, data objects or a source name, attacks and defenses by name, spec or object, threat models."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from advlab.core.attack import Attack
from advlab.core.config import AttackSpec, DefenseSpec, ModelSpec, default_weights
from advlab.core.defense import Defense
from advlab.core.errors import AdvlabError
from advlab.core.registry import get_attack
from advlab.core.settings import attack_defaults, parse_defenses, within_threat
from advlab.core.threat import ThreatModel, parse_threat
from advlab.zoo.custom_models import wrap_network
from advlab.zoo.models import MEMORY, load_model
from advlab.zoo.wrappers import ImageClassifier

AttackLike = str | Attack | AttackSpec
DefenseLike = str | Defense | DefenseSpec


def model_input(model: nn.Module | str, *, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                input_size: int | None = None, num_classes: int | None = None,
                class_names: Sequence[str] | None = None, task: str | None = None, weights: str | None = None,
                dataset: str | None = None, probe_size: int | None = None) -> tuple[ModelSpec, nn.Module | None]:
    """(the spec results.json records, the wrapped model or None where the spec names one to load).
    An `nn.Module` gets [0, 1] images at their own size, normalised by `mean`/`std` (default: as they
    are) and resized to `input_size` where given; its task comes from its output (or `task`)."""
    if isinstance(model, str):
        return ModelSpec(model, weights if weights is not None else default_weights(model), mean=_list(mean),
                         std=_list(std), input_size=input_size, num_classes=num_classes, task=task,
                         dataset=dataset), None
    if not isinstance(model, nn.Module):
        raise AdvlabError(f"model is a {type(model).__name__}; pass a torch.nn.Module or a model name "
                          "(e.g. 'resnet18', 'path/to/file.py:factory')")
    if isinstance(model, ImageClassifier) or (hasattr(model, "task") and hasattr(model, "describe")):
        wrapped = model  # already seen as advlab sees models (e.g. from advlab.load_model)
    else:
        name = f"{MEMORY}:{type(model).__name__}"
        wrapped = wrap_network(model, name, "in memory", mean=mean, std=std, input_size=input_size,
                               num_classes=num_classes, class_names=class_names, task=task, probe_size=probe_size)
    return ModelSpec(wrapped.name, None, task=wrapped.task), wrapped  # the weights are the object's own


def image_size(data: Any) -> int | None:
    """The height of the images in `data` (tensors, or a Dataset's first item; for the one probe of a model's
    output), None where it has none to tell."""
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        item = data[0]  # type: ignore[index]
        image = item[0] if isinstance(item, tuple | list) else item
        shape = getattr(image, "shape", None)
        if shape is None and hasattr(image, "size"):  # a PIL image: (width, height)
            return int(image.size[1])
        return int(shape[-2]) if shape is not None and len(shape) >= 2 else None
    x = data[0] if isinstance(data, tuple | list) and data else data
    shape = getattr(x, "shape", None)
    if shape is None or len(shape) != 4:
        return None
    return int(shape[2] if shape[1] in (1, 3) else shape[1])  # NCHW, else NHWC


@contextlib.contextmanager
def borrowed(model: nn.Module | str) -> Iterator[None]:
    """Leave the caller's module as it was found: its train/eval mode, which parameters require gradients,
    its device and memory format (a run puts it in eval mode, freezes it and may move it)."""
    if not isinstance(model, nn.Module):
        yield
        return
    modes = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    first = next(model.parameters(), None)
    device = first.device if first is not None else None
    try:
        yield
    finally:
        if device is not None:
            model.to(device=device, memory_format=torch.contiguous_format)
        for m, training in modes.items():
            m.training = training
        for p, requires in grads.items():
            p.requires_grad_(requires)


def attack_specs(attacks: AttackLike | Sequence[AttackLike], threats: list[ThreatModel],
                 settings: dict[str, Any], *, quiet: bool = False) -> list[AttackSpec]:
    """Attacks by name (with `settings` where the attack has them), spec or object. A named attack with an
    eps and no eps of its own gets each threat model's norm and eps (one attack per threat model), as
    AutoAttack's `norm` and `eps` do; `quiet` turns off the progress bar of every named attack that has one."""
    items = [attacks] if isinstance(attacks, str | Attack | AttackSpec) else list(attacks)
    if not items:
        raise AdvlabError("attacks is empty; name at least one, e.g. attacks='standard'")
    specs: list[AttackSpec] = []
    for item in items:
        if isinstance(item, AttackSpec):
            specs.append(item)
        elif isinstance(item, Attack):
            specs.append(AttackSpec(_registered_name(item), params=item.params()))
        elif isinstance(item, str):
            accepted = attack_defaults(get_attack(item).cls)
            own = {k: v for k, v in settings.items() if k in accepted}
            if quiet and "progress" in accepted:
                own.setdefault("progress", False)
            bounded = "eps" in accepted and "eps" not in own
            for threat in threats if bounded and threats else [None]:
                params = own if threat is None else within_threat(get_attack(item).cls, own, threat)
                if params is not None:  # None: an attack of one norm (fgsm: l_inf) serves only its own threat models
                    specs.append(AttackSpec(item, params=dict(params)))
        else:
            raise AdvlabError(f"attacks: {item!r} is neither an attack name, an AttackSpec nor an Attack")
    unused = sorted(set(settings) - {k for s in specs for k in attack_defaults(get_attack(s.method).cls)})
    if unused:
        raise AdvlabError(f"no attack of this evaluation has the setting {unused[0]!r}")
    return specs


def defense_specs(defenses: DefenseLike | Sequence[DefenseLike], adaptive: bool) -> list[DefenseSpec]:
    """Defenses by name ('jpeg', 'jpeg:quality=50', 'hgd:checkpoint=FILE'), spec or object."""
    items = [defenses] if isinstance(defenses, str | Defense | DefenseSpec) else list(defenses)
    specs: list[DefenseSpec] = []
    for item in items:
        if isinstance(item, DefenseSpec):
            specs.append(item)
        elif isinstance(item, Defense):
            specs.append(DefenseSpec(_registered_name(item), adaptive, item.params()))
        elif isinstance(item, str):
            specs += [DefenseSpec(name, adaptive, params) for name, params in parse_defenses(item)]
        else:
            raise AdvlabError(f"defenses: {item!r} is neither a defense name, a DefenseSpec nor a Defense")
    return specs


def threat_models(threat: str | ThreatModel | Sequence[str | ThreatModel] | None) -> list[ThreatModel]:
    """'linf:8/255' (or several) as threat models."""
    if threat is None:
        return []
    items = [threat] if isinstance(threat, str | ThreatModel) else list(threat)
    return [t if isinstance(t, ThreatModel) else parse_threat(t) for t in items]


def _registered_name(plugin: Attack | Defense) -> str:
    name = getattr(type(plugin), "name", "")
    if not name:
        raise AdvlabError(f"{type(plugin).__name__} is not a registered plugin (no name); register it with "
                          "@register_attack / @register_defense")
    return name


def _list(values: Sequence[float] | None) -> list[float] | None:
    return None if values is None else [float(v) for v in values]


__all__ = ["attack_specs", "borrowed", "defense_specs", "image_size", "load_model", "model_input", "threat_models"]
