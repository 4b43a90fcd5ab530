"""Criteria: what counts as adversarial, defined on model outputs rather than on labels (the
criteria objects of foolbox 3, Rauber et al., JOSS 2020, extended to dense targets).

A criterion holds per-image targets `labels` (N, ...): one class per image for classification, one
per pixel for segmentation (255 = ignored). From the model's outputs it gives

- `margins(outputs)` (N, T): one margin per target, > 0 where that target is fooled;
- `is_adversarial(outputs)` (N,) bool: the share of an image's valid targets that are fooled is at
  least `threshold` (1.0 = all of them; one target per image makes it the usual top-1 test);
- `loss(outputs)` (N,): an objective to ascend, so that gradient attacks (FGSM, PGD, universal
  perturbations) run on any task whose criteria define it.

Untargeted and Targeted below serve every task; task adapters (`advlab.tasks`) build them."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
import torch.nn.functional as F

IGNORE = 255  # a target label that is not a target (segmentation's void pixels)


def label_dtype(num_classes: int) -> torch.dtype:
    """The smallest dtype for per-position labels of `num_classes` classes and the void label IGNORE:
    dense labels of a whole set (label maps, masks, targets) are kept in it, one byte per pixel."""
    return torch.uint8 if num_classes <= IGNORE else torch.int64


@dataclass(frozen=True)
class Criterion:
    """Base criterion. Outputs are (N, K) logits with labels (N,), or dense (N, K, *S) logits with
    labels (N, *S) (segmentation: S = (H, W)); targets are the N x prod(S) label positions."""

    # (N, *S): the class each target must leave (untargeted) or reach (targeted); int64, or dense labels
    # kept compact in `label_dtype` (uint8), widened where they index
    labels: torch.Tensor
    threshold: float = 1.0  # share of an image's valid targets that must be fooled
    original: torch.Tensor | None = None  # (N, *S) each target's reference class, where the task knows it

    targeted: ClassVar[bool] = False  # reach `labels` rather than leave them

    def evaluate(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The outputs this criterion reads, for images x: the model's logits (a detection criterion
        reads the box head's logits on its fixed proposals instead)."""
        return model(x)

    def fooled(self, outputs: torch.Tensor) -> torch.Tensor:
        """(N, K, *S) -> (N, T) bool: targets whose top-1 class is fooled (ignored targets: False)."""
        pred = outputs.argmax(dim=1).flatten(1) if outputs.dim() > 2 else outputs.argmax(dim=1)[:, None]
        labels = self._flat_labels()
        hit = pred == labels if self.targeted else pred != labels
        return hit & self.valid()

    def margins(self, outputs: torch.Tensor) -> torch.Tensor:
        """(N, K, *S) -> (N, T) logit margins, > 0 where a target is fooled: best other class minus
        the label's logit (untargeted), or the target's logit minus the best other (targeted)."""
        labels = (torch.where(self.labels == IGNORE, 0, self.labels) if self.dense else self.labels).long()
        own = outputs.gather(1, labels.unsqueeze(1))  # (N, 1, *S)
        other = outputs.scatter(1, labels.unsqueeze(1), -math.inf).amax(dim=1, keepdim=True)  # (N, 1, *S)
        margin = (own - other if self.targeted else other - own).flatten(1)  # (N, T)
        return margin.masked_fill(~self.valid(), -math.inf)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:
        """(N, K, *S) -> (N,) cross-entropy of the labels, averaged over each image's valid targets:
        ascended as is (untargeted) or negated (targeted: descend the target's cross-entropy)."""
        ignore = IGNORE if self.dense else -100
        ce = F.cross_entropy(outputs, self.labels.long(), reduction="none", ignore_index=ignore).reshape(len(self), -1)
        per_image = ce.sum(1) / self.valid().sum(1).clamp_min(1)
        return -per_image if self.targeted else per_image

    def margin_loss(self, outputs: torch.Tensor) -> torch.Tensor:
        """(N, K, *S) -> (N,) mean margin over valid targets (Carlini & Wagner's, without the kappa clamp)."""
        margins, valid = self.margins(outputs), self.valid()
        return margins.masked_fill(~valid, 0.0).sum(1) / valid.sum(1).clamp_min(1)

    @property
    def dense(self) -> bool:
        """Per-position targets (N, *S), where IGNORE marks void positions; (N,) labels are all valid
        (class 255 is a real ImageNet class)."""
        return self.labels.dim() > 1

    def valid(self) -> torch.Tensor:
        """(N, T) bool: the targets that count (dense labels other than IGNORE)."""
        flat = self._flat_labels()
        return flat != IGNORE if self.dense else torch.ones_like(flat, dtype=torch.bool)

    def foreground(self) -> torch.Tensor:
        """(N,) how many of each image's valid targets belong to an object: reference class > 0 where
        `original` is known (background is class 0), every valid target otherwise."""
        valid = self.valid()
        if self.original is None:
            return valid.sum(1)
        original = self.original.flatten(1) if self.dense else self.original[:, None]
        return (valid & (original != 0) & (original != IGNORE)).sum(1)

    def fooled_share(self, outputs: torch.Tensor) -> torch.Tensor:
        """(N,) share of each image's valid targets that are fooled (1 for an image without targets)."""
        count = self.valid().sum(1)
        return torch.where(count > 0, self.fooled(outputs).sum(1) / count.clamp_min(1), 1.0)

    def is_adversarial(self, outputs: torch.Tensor) -> torch.Tensor:
        """(N,) bool: at least `threshold` of the image's valid targets are fooled."""
        if not self.dense and self.threshold > 0:  # one target per image: the top-1 test itself (hot in query loops)
            pred = outputs.argmax(dim=1)
            return pred == self.labels if self.targeted else pred != self.labels
        if self.threshold >= 1.0:
            valid = self.valid()
            return (self.fooled(outputs) | ~valid).all(dim=1)
        return self.fooled_share(outputs) >= self.threshold

    def subset(self, index: torch.Tensor | slice) -> Criterion:
        """The criterion of some images: a slice, a bool mask or an index tensor (repeats allowed);
        every per-image tensor field (labels, and e.g. proposals) is cut alike."""
        return replace(self, **{f: v[index] for f, v in self._tensors().items()})

    def to(self, device: torch.device | str) -> Criterion:
        return replace(self, **{f: v.to(device) for f, v in self._tensors().items()})

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def _flat_labels(self) -> torch.Tensor:
        return self.labels.flatten(1) if self.labels.dim() > 1 else self.labels[:, None]


class Untargeted(Criterion):
    """Adversarial when the top-1 class differs from `labels` (the true or the clean-predicted class),
    at every target (or at `threshold` of them)."""


class Targeted(Criterion):
    """Adversarial when the top-1 class equals the target in `labels`, at every target (or at
    `threshold` of them)."""

    targeted = True


@dataclass(frozen=True)
class ProposalTargets(Targeted):
    """Detection targets (Xie et al., ICCV 2017): per image, region proposals held fixed during the
    attack, each with an adversarial label; outputs are the detector's box-head logits (N, K, P) on
    them (`model.padded_logits`). Images have P slots; unused slots carry the IGNORE label."""

    proposals: torch.Tensor = None  # type: ignore[assignment]  # (N, P, 4) x1, y1, x2, y2 in input pixels
    counts: torch.Tensor = None  # type: ignore[assignment]  # (N,) int64 proposals used per image

    def evaluate(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        return model.padded_logits(x, self.proposals, self.counts)  # (N, K, P)
