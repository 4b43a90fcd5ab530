"""Device and precision selection (`--device auto|cpu|cuda[:k]`, `--precision fp32|tf32|bf16`)."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
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
    if device.type == "cpu":
        keep_freed_memory()
    return device


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)


@functools.cache
def keep_freed_memory() -> bool:
    """On glibc (Linux), serve large tensors from the heap and keep freed memory for reuse, instead of
    mmap/munmap per tensor: CPU forward passes allocate and free the same activation buffers again
    and again, and the page faults of fresh mappings cost as much as the convolutions (MobileNetV2,
    batch 16, 2 cores: 49 -> 93 images/s). The process keeps its peak memory resident. Returns
    whether it applied."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31))
    except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
        return False


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
