"""Whether a model is randomised: two passes on the same images that differ beyond float noise (a stochastic
defense, noise or dropout in the forward pass). The sanity probe warns about it, `standard` switches to
AutoAttack's rand version on it, and the runner measures such a model over several predictions per image."""
from __future__ import annotations

import torch
from torch import nn

RTOL, ATOL = 1e-4, 1e-5  # float noise between two passes of a deterministic model (kernels, thread counts)


def passes_differ(model: nn.Module, x: torch.Tensor) -> bool:
    """Two passes of `model` on images x (N, C, H, W) differ; False for outputs that are not one tensor (a
    detector's lists of boxes: their verdicts are compared as they are)."""
    with torch.no_grad():
        first, second = model(x), model(x)
    if not isinstance(first, torch.Tensor):
        return False
    return not torch.allclose(first.float(), second.float(), rtol=RTOL, atol=ATOL)


__all__ = ["passes_differ"]
