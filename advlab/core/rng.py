"""Counter-based random numbers with one stream per image, computed on the device in batch.

A batched attack must give image A the same noise whether A is attacked alone or inside a batch,
at any position, without a per-image Python loop. Each image gets a 32-bit key from a hash of its
own pixels and the run's seed; the noise for (key, step, element) is a pure function of those
numbers (a counter-based generator in the spirit of Salmon et al., "Parallel random numbers: as
easy as 1, 2, 3", SC 2011), so it does not depend on batch composition, device or call order.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch

M32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # < 2**27: products of 32-bit values stay inside int64
_GOLDEN = 0x9E3779B9


def mix32(x: torch.Tensor) -> torch.Tensor:
    """Avalanche hash of int64 tensors holding values in [0, 2**32)."""
    x = ((x ^ (x >> 16)) * _MUL) & M32
    x = ((x ^ (x >> 16)) * _MUL) & M32
    return x ^ (x >> 16)


def image_keys(x: torch.Tensor, seed: int) -> torch.Tensor:
    """(N, C, H, W) images -> (N,) int64 keys from each image's own pixels and the seed."""
    q = (x.detach().flatten(1).float() * 65535).round().long()  # (N, D)
    pos = mix32(torch.arange(q.shape[1], device=x.device, dtype=torch.long))  # (D,)
    h = mix32((q ^ pos) & M32).sum(dim=1) & M32  # (N,)
    return mix32(h ^ (seed & M32))


KEYS_BATCH = 256  # images hashed at once by `keys_of`: the (B, D) int64 temporary stays this size


def keys_of(x: torch.Tensor | Iterable[torch.Tensor], seed: int) -> torch.Tensor:
    """`image_keys` of a whole set (N, C, H, W) or of its batches (an iterable of (B, C, H, W), e.g.
    `Images.batches`), KEYS_BATCH images at a time: the same keys, without an (N, D) temporary."""
    parts = x.split(KEYS_BATCH) if isinstance(x, torch.Tensor) else x
    found = [image_keys(b, seed) for b in parts]
    return torch.cat(found) if found else torch.zeros(0, dtype=torch.long)


def step_keys(keys: torch.Tensor, stream: int, step: int) -> torch.Tensor:
    """(N,) image keys -> (N,) keys of one (stream, step) pair."""
    return mix32((mix32(keys ^ (stream & M32)) + (step * _GOLDEN)) & M32)


def uniform(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(N,) keys -> (N, *shape) float32 uniform in (0, 1) with 24-bit resolution."""
    count = math.prod(shape)
    ctr = torch.arange(count, device=keys.device, dtype=torch.long)
    bits = mix32((keys[:, None] ^ mix32(ctr)[None, :]) & M32)  # (N, count)
    return ((bits >> 8).float() + 0.5).mul_(2.0**-24).view(keys.shape[0], *shape)


def normal(keys: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """(N,) keys -> (N, *shape) float32 standard normal (Box-Muller on two 16-bit halves of one hash;
    tails are cut at about 4.7 sigma, irrelevant for random directions)."""
    count = math.prod(shape)
    pairs = (count + 1) // 2
    ctr = torch.arange(pairs, device=keys.device, dtype=torch.long)
    bits = mix32((keys[:, None] ^ mix32(ctr)[None, :]) & M32)  # (N, pairs)
    u1 = ((bits >> 16).float() + 0.5) * 2.0**-16
    u2 = ((bits & 0xFFFF).float() + 0.5) * 2.0**-16
    radius = torch.sqrt(-2.0 * torch.log(u1))
    angle = (2.0 * math.pi) * u2
    z = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)], dim=1)  # (N, 2 * pairs)
    return z[:, :count].view(keys.shape[0], *shape)
