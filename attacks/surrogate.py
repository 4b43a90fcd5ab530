"""Surrogate-biased proposals for decision-based attacks (Brunner, Diehl, Truong Le & Knoll,
"Guessing Smart: Biased Sampling for Efficient Black-Box Adversarial Attacks", ICCV 2019).

A local surrogate model, one the attacker holds in full, lends its input gradient: the Boundary
Attack's orthogonal step is tilted toward the direction that makes the current adversarial *more*
adversarial for the surrogate. The attacked model is still only asked for top-1 decisions; the
surrogate's forward and backward passes are the attacker's own compute and are not counted as
queries. The row says what the attack knew (`knowledge`).

The surrogate is named like any model of the run: a torchvision classifier name (its default
weights), or a model entry `{name, weights, mean, std, input_size, num_classes}`; or, from Python,
an `ImageClassifier` itself.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from advlab.core.config import ModelSpec, default_weights
from advlab.core.criteria import Criterion
from advlab.core.errors import AdvlabError
from advlab.core.paths import absolute_model

SurrogateSetting = str | dict | nn.Module | None


def surrogate_spec(value: SurrogateSetting) -> ModelSpec | nn.Module | None:
    """The surrogate setting as a model entry (paths absolute) or a model object; ValueError if malformed."""
    if value is None or isinstance(value, nn.Module):
        return value
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("surrogate must name a model, e.g. resnet18 or FILE.py:factory")
        value = {"name": value}
    if not isinstance(value, dict):
        raise TypeError(f"surrogate must be a model name or a model entry {{name: ..., weights: ...}}, "
                         f"got {value!r}")
    keys = {f.name for f in dataclasses.fields(ModelSpec)}
    unknown = sorted(set(value) - keys)
    if unknown or "name" not in value:
        raise ValueError(f"surrogate entry needs 'name' and takes only {', '.join(sorted(keys))}; "
                         f"got {sorted(value)}")
    entry = {"weights": default_weights(str(value["name"])), **value}
    return absolute_model(ModelSpec(**entry))


def describe(spec: ModelSpec | nn.Module | None) -> Any:
    """The surrogate as results.json records it (a model entry, or a model object's name and weights)."""
    if spec is None:
        return None
    if isinstance(spec, nn.Module):
        return {"name": getattr(spec, "name", type(spec).__name__), "weights": getattr(spec, "weights", None)}
    return {k: v for k, v in dataclasses.asdict(spec).items() if v is not None}


def load_surrogate(spec: ModelSpec | nn.Module, device: torch.device, victim: nn.Module) -> nn.Module:
    """The surrogate model in eval mode on `device`, its parameters frozen. A bring-your-own surrogate
    (FILE.py:factory) whose entry leaves input_size, mean or std unset takes the attacked model's: it
    must see the images the way the attacked model does."""
    if isinstance(spec, nn.Module):
        model = spec
    else:
        from advlab.zoo.models import load_model

        if ":" in spec.name:
            inherited = {"input_size": getattr(victim, "input_size", None),
                         **{k: _buffer_list(victim, k) for k in ("mean", "std")}}
            spec = dataclasses.replace(spec, **{k: v for k, v in inherited.items() if getattr(spec, k) is None})
        model = load_model(spec.name, spec.weights, mean=spec.mean, std=spec.std, input_size=spec.input_size,
                           num_classes=spec.num_classes, class_names_file=spec.class_names, task=spec.task)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _buffer_list(model: nn.Module, name: str) -> list[float] | None:
    value = getattr(model, name, None)
    return value.flatten().tolist() if isinstance(value, torch.Tensor) else None


def check_compatible(surrogate: nn.Module, model: nn.Module, shape: tuple[int, ...]) -> None:
    """Refuse, with one line, a surrogate that does not see the attacked images the way the attacked
    model does: another class count, channel count or input size."""
    name = getattr(surrogate, "name", type(surrogate).__name__)
    for attribute, what in (("num_classes", "classes"), ("in_channels", "input channels")):
        theirs, ours = getattr(surrogate, attribute, None), getattr(model, attribute, None)
        if attribute == "in_channels" and ours is None:
            ours = shape[0]
        if theirs is not None and ours is not None and theirs != ours:
            raise AdvlabError(f"surrogate {name} has {theirs} {what}, the attacked model {ours}; pick a surrogate "
                              f"with the same {what}")
    theirs = getattr(surrogate, "input_size", None)
    ours = getattr(model, "input_size", None) or (shape[-1] if shape[-1] == shape[-2] else None)
    if theirs is not None and ours is not None and theirs != ours:
        raise AdvlabError(f"surrogate {name} expects {theirs}x{theirs} inputs, the attacked model {ours}x{ours}; "
                          f"pick a surrogate with the same input size (or set its input_size)")


def gradient_directions(surrogate: nn.Module, points: torch.Tensor, criterion: Criterion,
                        shape: tuple[int, ...]) -> torch.Tensor:
    """(A, D) adversarial points -> (A, D) the surrogate's input gradient of the criterion's margin (the
    direction in which each point becomes more adversarial for the surrogate), unnormalised."""
    with torch.enable_grad():
        x = points.detach().view(-1, *shape).requires_grad_(True)
        margin = criterion.margins(surrogate(x).float())  # (A, 1)
        (grad,) = torch.autograd.grad(margin.clamp(-1e4, 1e4).sum(), x)
    return grad.flatten(1)


TRANSFER_RMS = (0.005, 0.01, 0.02, 0.04, 0.08, 0.16)  # per-pixel RMS radii of the transfer start (x sqrt(D) = L2)


def transfer_step(surrogate: nn.Module, x: torch.Tensor, adv: torch.Tensor, criterion: Criterion,
                  shape: tuple[int, ...], radius: float, *, steps: int = 5) -> torch.Tensor:
    """(M, D) originals and warm starts -> (M, D) l2 PGD on the surrogate's margin within `radius`: a
    start that may transfer to the attacked model (Brunner et al., ICCV 2019, used once at the start,
    at growing radii TRANSFER_RMS). Deterministic: no random draws."""
    for _ in range(steps):
        grad = gradient_directions(surrogate, adv, criterion, shape)  # (M, D)
        adv = adv + (2.5 * radius / steps) * grad / grad.norm(dim=1, keepdim=True).clamp_min(1e-12)
        delta = adv - x
        adv = (x + delta * (radius / delta.norm(dim=1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)).clamp(0, 1)
    return adv
