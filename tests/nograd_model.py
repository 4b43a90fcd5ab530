"""A model factory for tests/test_gradients_blocked.py: the digits CNN with its forward under torch.no_grad(),
as some exported or wrapped models run (`--model tests/nograd_model.py:factory`)."""
from __future__ import annotations

import torch
from conftest import digits_net
from torch import nn


class NoGrad(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = digits_net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 1, 8, 8) -> (N, 10), no gradient path
        with torch.no_grad():
            return self.net((x - 0.5) / 0.5)


def factory() -> nn.Module:
    return NoGrad()
