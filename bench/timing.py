"""Timing shared by the benchmarks: the median wall time of a call, synchronised on the device."""
from __future__ import annotations

import time
from collections.abc import Callable

import torch

from advlab.core.device import synchronize


def median_time(fn: Callable[[], None], device: torch.device, reps: int, warmup: int = 2) -> float:
    """Seconds of one `fn()` (median of `reps`, after `warmup` untimed calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]
