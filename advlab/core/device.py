"""Device and precision selection (`--device auto|cpu|cuda[:k]`, `--precision fp32|tf32|bf16`)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

import torch

from advlab.core.errors import AdvlabError


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise AdvlabError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:K") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise AdvlabError(f"--device {spec}: no CUDA GPU is visible to torch; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise AdvlabError(f"--device {spec}: only {torch.cuda.device_count()} GPU(s) visible; use cuda:0..")
    elif device.type != "cpu":
        raise AdvlabError(f"unsupported device {spec!r}; use auto, cpu, cuda or cuda:K")
    return device


def manage_heap() -> bool:
    """Opt this process in to the allocator policy of long CPU runs: large tensors served from a heap
    that keeps freed memory for reuse (`keep_freed_memory`), and the heap's free pages handed back
    between batches once it has grown (`release_freed_memory`, from `Images.groups`). Process-wide and
    not undone: the command line enters it for every run; a library caller asks for it
    (`advlab.evaluate(..., manage_heap=True)`), as nothing else in a notebook should change. Returns
    whether the allocator setting applied (glibc only)."""
    _Heap.managed = True
    return keep_freed_memory()


def between_batches() -> None:
    """What a streamed loop does once it is done with a batch: release freed heap pages, in a process
    that opted in (`manage_heap`); nothing otherwise."""
    if _Heap.managed:
        release_freed_memory()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 30  # tensors this large or larger get their own mapping, returned whole when freed
HEAP_SLACK = 64 << 20  # bytes the resident size may grow past where it settled before freed pages go back


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library where it is glibc (Linux), else None: the allocator is then left alone."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None  # musl: no malloc_trim


@functools.cache
def keep_freed_memory() -> bool:
    """On glibc (Linux), serve large tensors from the heap and keep freed memory for reuse, instead of
    mmap/munmap per tensor: CPU forward passes allocate and free the same activation buffers again
    and again, and the page faults of fresh mappings cost as much as the convolutions (MobileNetV2,
    batch 16, 2 cores: 49 -> 93 images/s). What this asks of the loops: nothing small of a batch may
    outlive it, or it pins a hole and the heap's extent grows every batch (`advlab.core.per_image`);
    `release_freed_memory` hands back what grows anyway. Returns whether it applied."""
    libc = _glibc()
    return libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31))


class _Heap:
    managed = False  # `manage_heap` was called
    settled: int | None = None  # resident bytes at the first batch boundary after the last release


def release_freed_memory() -> bool:
    """Called between the batches of every streamed loop (`Images.groups`). Once the resident size
    has grown `HEAP_SLACK` past where it settled after the last release, hand the heap's free pages
    back to the system (glibc `malloc_trim`, every arena); the next batch boundary is where it settles
    again. A loop whose heap does not grow never releases, so it keeps its buffers for reuse; one
    whose heap fragments (forward and backward passes of different sizes in turn, several threads'
    arenas) stays within one batch's working set plus the slack instead of growing with the number
    of batches (MobileNetV2 FGSM, batch 32, 3,200 photos, before the per-image arrays of
    `advlab.core.per_image`: 7.6 -> 4.6 GB peak, `bench/memory.py --photos --no-release`). Returns
    whether it released."""
    libc = _glibc()
    if libc is None:
        return False
    with open("/proc/self/statm", "rb") as statm:
        resident = int(statm.read().split()[1]) * _PAGE
    if _Heap.settled is None:
        _Heap.settled = resident
        return False
    if resident <= _Heap.settled + HEAP_SLACK:
        return False
    libc.malloc_trim(0)
    _Heap.settled = None
    return True


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocator refusing memory: CUDA's `OutOfMemoryError`, the CPU allocator's
    "can't allocate memory" (a RuntimeError), Python's MemoryError. (On Linux a CPU process may
    instead be ended by the kernel's OOM killer, which no handler sees.)"""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)


def free_memory_gib(device: torch.device) -> float | None:
    """Memory the device has free now, in GiB: the GPU's free memory, or the system's MemAvailable
    (Linux); None where it cannot be read."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**30
    try:
        with open("/proc/meminfo") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        return int(fields["MemAvailable"].split()[0]) / 2**20
    except (OSError, KeyError, ValueError):
        return None


def batch_does_not_fit(batch_size: int, device: torch.device) -> AdvlabError:
    """The one line for a run whose batches do not fit in the device's memory, naming the batch size
    that halves the activations (at batch 1: the image or the model is what does not fit)."""
    free = free_memory_gib(device)
    where = f"{device_name(device)}" + (f", {free:.1f} GiB free" if free is not None else "")
    if batch_size == 1:
        return AdvlabError(f"one image does not fit in memory ({where}): use a smaller --input-size, a smaller "
                           "model or a device with more memory")
    return AdvlabError(f"a batch of {batch_size} images does not fit in memory ({where}): run again with "
                       f"--batch-size {batch_size // 2} (and a smaller batch_size setting where the attack has one)")


def apply_precision(precision: str) -> torch.dtype | None:
    """Set TF32 matmul/conv for 'tf32'; return the autocast dtype for 'bf16' (else None)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return torch.bfloat16 if precision == "bf16" else None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
