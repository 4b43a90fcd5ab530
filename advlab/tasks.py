"""Criteria: what counts as adversarial, per task (foolbox-style objects instead of mode flags)."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Criterion:
    """Base: `labels[N]` are the classes the criterion is defined by (true or target)."""

    labels: torch.Tensor  # (N,) int64

    def is_adversarial(self, logits: torch.Tensor) -> torch.Tensor:  # (N, classes) -> (N,) bool
        raise NotImplementedError

    def subset(self, index: torch.Tensor | slice) -> "Criterion":
        return type(self)(self.labels[index])

    def to(self, device: torch.device | str) -> "Criterion":
        return type(self)(self.labels.to(device))

    def __len__(self) -> int:
        return int(self.labels.shape[0])


class Untargeted(Criterion):
    """Adversarial when the top-1 class differs from `labels` (the true or the clean-predicted class)."""

    def is_adversarial(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1) != self.labels


class Targeted(Criterion):
    """Adversarial when the top-1 class equals the target in `labels`."""

    def is_adversarial(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(dim=-1) == self.labels
