"""`Wrapping`: a model around another model (`self.model`) that looks like it to the runner, the report and
the attacks: the attributes they read from an ImageClassifier, passed through. `Defended` (a defense in front)
and `Binarized` (the binarization test's head replaced) are two."""
from __future__ import annotations

import torch
from torch import nn


class Wrapping(nn.Module):
    """Passes the wrapped model's task, input size, channels and autocast dtype through."""

    model: nn.Module

    @property
    def task(self) -> str:
        return self.model.task

    @property
    def input_size(self) -> int | None:
        return getattr(self.model, "input_size", None)

    @property
    def in_channels(self) -> int:
        return self.model.in_channels

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        return getattr(self.model, "autocast_dtype", None)


__all__ = ["Wrapping"]
