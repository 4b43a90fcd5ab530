"""Summary statistics of per-image values for results rows."""
from __future__ import annotations

import torch


def median(values: torch.Tensor) -> float | None:
    """The usual median of the finite values (the mean of the two middle ones for an even count, as
    numpy's and the report's plots), or None when there are none."""
    values = values[torch.isfinite(values)]
    return float(values.double().quantile(0.5)) if values.numel() else None
