"""Per-image numbers of a streamed loop, written into arrays allocated once for the whole set.

Why not a list of per-batch tensors concatenated at the end: on the CPU (glibc, with freed memory kept
for reuse, `advlab.core.device.keep_freed_memory`) a batch's activations leave large holes in the heap
when they are freed, and a small tensor that outlives its batch (its labels, distances, success flags)
is carved out of such a hole and pins it: the next batch's activations no longer fit there, and the
heap's address space grows by about a batch's working set every batch (MobileNetV2 FGSM at batch 32:
about 60 MiB per batch, so tens of GB over a 50,000-photo run, until Linux refuses to fork the next
pass's decoding workers). Slices of arrays allocated once keep nothing of a batch alive past it; the
heap's extent then stays flat (`tests/test_memory.py`)."""
from __future__ import annotations

from collections.abc import Mapping

import torch


class PerImageArrays:
    """Arrays over `count` images, filled a batch at a time in any order: `put` for (B, ...) per-image
    values, `put_steps` for (T, B) per-step traces (T may differ between batches; a shorter trace is
    padded with its last step). A key counts only once every image has a value (`complete`)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrays: dict[str, torch.Tensor] = {}  # key -> (count, ...) or (T, count) for traces
        self.filled: dict[str, int] = {}  # key -> images written

    def put(self, start: int, values: Mapping[str, torch.Tensor]) -> None:
        """Write (B, ...) values for images start .. start + B - 1."""
        for key, value in values.items():
            if key not in self.arrays:
                self.arrays[key] = torch.empty((self.count, *value.shape[1:]), dtype=value.dtype)
            self.arrays[key][start:start + len(value)] = value
            self.filled[key] = self.filled.get(key, 0) + len(value)

    def put_steps(self, start: int, traces: Mapping[str, torch.Tensor]) -> None:
        """Write (T, B) per-step values for images start .. start + B - 1."""
        for key, trace in traces.items():
            steps, width = trace.shape[0], trace.shape[1]
            kept = self.arrays.get(key)
            if kept is None:
                kept = self.arrays[key] = torch.empty((steps, self.count, *trace.shape[2:]), dtype=trace.dtype)
            elif kept.shape[0] < steps:  # a longer trace: the columns written so far repeat their last step
                longer = torch.empty((steps, *kept.shape[1:]), dtype=kept.dtype)
                longer[:kept.shape[0]] = kept
                longer[kept.shape[0]:] = kept[-1:]
                kept = self.arrays[key] = longer
            kept[:steps, start:start + width] = trace
            kept[steps:, start:start + width] = trace[-1:]
            self.filled[key] = self.filled.get(key, 0) + width

    def complete(self) -> dict[str, torch.Tensor]:
        """The arrays every image was written to."""
        return {key: array for key, array in self.arrays.items() if self.filled[key] == self.count}
