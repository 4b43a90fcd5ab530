"""The defense contract: a preprocessor `x -> x'` on [0, 1] images placed in front of a model.

`Defended(model, defense)` is again a model, so every attack runs unchanged against the plain
model (the non-adaptive or transfer setting: examples made on the bare model, then defended) or
against the defended one end to end (the adaptive setting). Defenses that cannot be
differentiated (JPEG, bit-depth reduction) are attacked through BPDA with the identity as the
backward pass (Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of Security",
ICML 2018), and `Defended.adaptive_gradient` says which gradient an adaptive attack got.
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar

import torch
from torch import nn

from advlab.core.wrapping import Wrapping


class Defense(nn.Module):
    """Base class of every defense plugin. Register subclasses with `@register_defense`.

    Subclasses take their settings as keyword-only `__init__` arguments, store them as attributes
    of the same name, and implement `forward(x) -> x'`, both (N, C, H, W) in [0, 1]."""

    name: ClassVar[str] = ""
    differentiable: ClassVar[bool] = True  # False: adaptive attacks differentiate through BPDA (identity)
    path_settings: ClassVar[tuple[str, ...]] = ()  # settings that name files (made absolute in config.yaml)

    def params(self) -> dict[str, Any]:
        """The settings, for results.json: every keyword-only `__init__` argument, by attribute."""
        names = [n for n, p in inspect.signature(type(self).__init__).parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    def variant(self) -> str:
        """A short label of the settings for tables (e.g. 'q75', 'lgd')."""
        return ", ".join(f"{k}={v}" for k, v in self.params().items())

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "variant": self.variant(), "params": self.params(),
                "differentiable": self.differentiable}


def clamp_unit(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 1] with the identity as gradient. A plain clamp has zero gradient outside the
    range, which would mask gradients wherever a denoiser overshoots a saturated pixel (e.g. the
    black background of Fashion-MNIST) and make adaptive attacks look weaker than they are."""
    return x + (x.clamp(0.0, 1.0) - x).detach()


def bpda_identity(x: torch.Tensor, transformed: torch.Tensor) -> torch.Tensor:
    """`transformed` in the forward pass, the identity in the backward pass (BPDA, Athalye et al. 2018)."""
    return x + (transformed - x).detach()


class Defended(Wrapping):
    """`model(defense(x))`, looking like the wrapped model (class names, input size, name).

    Gradients flow through a differentiable defense exactly; through a non-differentiable one
    they follow BPDA with the identity. Under `--precision bf16` the defense runs in autocast too."""

    def __init__(self, model: nn.Module, defense: Defense) -> None:
        super().__init__()
        self.model = model
        self.defense = defense

    @property
    def adaptive_gradient(self) -> str:
        """"exact", "bpda" (the identity through a non-differentiable defense), or "none" (its naive,
        zero gradient: a defense with `bpda` off, kept to show what gradient masking looks like)."""
        if self.defense.differentiable:
            return "exact"
        return "bpda" if getattr(self.defense, "bpda", True) else "none"

    # the attributes the runner, the report and attacks read from an ImageClassifier
    @property
    def class_names(self) -> list[str]:
        return self.model.class_names

    @property
    def num_classes(self) -> int:
        return len(self.model.class_names)

    @property
    def name(self) -> str:
        return f"{self.model.name}+{self.defense.name}"

    @property
    def weights(self) -> str:
        return f"{self.model.weights} + {self.defense.name} ({self.defense.variant()})"

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """The defense alone: (N, C, H, W) in [0, 1] -> (N, C, H, W) in [0, 1], float32."""
        if self.autocast_dtype is not None:
            with torch.autocast(device_type=x.device.type, dtype=self.autocast_dtype):
                out = self.defense(x)
        else:
            out = self.defense(x)
        return clamp_unit(out.float())

    def seen(self, x: torch.Tensor) -> torch.Tensor:
        """What the model sees of x: the defended image, with the exact, BPDA or zero gradient."""
        if self.defense.differentiable:
            return self.purify(x)
        with torch.no_grad():
            purified = self.purify(x.detach())
        if self.adaptive_gradient == "none":
            return purified + 0 * x  # the gradient of a piecewise-constant map: zero
        return bpda_identity(x, purified)

    def forward(self, x: torch.Tensor) -> Any:  # (N, C, H, W) in [0, 1] -> the model's outputs (logits)
        return self.model(self.seen(x))

    # the detection contract (advlab.zoo.detectors), through the defense
    def detect(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        return self.model.detect(self.seen(x))

    def proposals(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.proposals(self.seen(x))

    def proposal_logits(self, x: torch.Tensor, proposals: list[torch.Tensor]) -> list[torch.Tensor]:
        return self.model.proposal_logits(self.seen(x), proposals)

    def padded_logits(self, x: torch.Tensor, proposals: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return self.model.padded_logits(self.seen(x), proposals, counts)

    def describe(self) -> dict[str, Any]:
        base = self.model.describe() if hasattr(self.model, "describe") else {"name": self.model.name}
        return {**base, "defense": self.defense.describe()}
