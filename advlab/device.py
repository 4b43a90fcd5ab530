"""Device and precision selection (`--device auto|cpu|cuda[:k]`, `--precision fp32|tf32|bf16`)."""
from __future__ import annotations

import torch

from advlab.errors import AdvlabError


def resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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
