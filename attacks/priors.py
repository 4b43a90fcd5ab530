"""Proposal priors for decision-based attacks: where the random directions come from.

- "normal": i.i.d. Gaussian noise over every pixel (Brendel et al., ICLR 2018).
- "lowfreq": Gaussian noise on a coarse grid (`ratio` of the image side, at least 4 cells), bilinearly upsampled:
  natural-image classifiers are far more sensitive to low frequencies, so such directions cross the
  boundary with fewer queries (Guo, Frank & Weinberger, "Low Frequency Adversarial Perturbation",
  UAI 2019).
- "perlin": Perlin gradient noise with `frequency` lattice cells per side (Perlin, SIGGRAPH 1985),
  the prior of Brunner et al., "Guessing Smart: Biased Sampling for Efficient Black-Box
  Adversarial Attacks", ICCV 2019.

Every draw comes from the counter-based per-image streams of `advlab.rng` (keys (A,) -> noise
(A, K, C, H, W)), so a prior keeps the attack's batch invariance; generation is a few elementwise
passes over the images, small next to one forward pass of the model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from advlab.rng import normal, uniform

PRIORS = ("normal", "lowfreq", "perlin")
MIN_GRID = 4  # lowfreq: the coarse grid has at least this many cells per side (small images)


def proposals(prior: str, keys: torch.Tensor, k: int, shape: tuple[int, ...], *, ratio: float = 0.125,
              frequency: int = 6) -> torch.Tensor:
    """(A,) keys -> (A, K, D) noise directions (D = C * H * W), unnormalised."""
    a, (c, h, w) = keys.shape[0], shape
    if prior == "normal":
        return normal(keys, (k, c * h * w))
    if prior == "lowfreq":
        gh, gw = (max(min(MIN_GRID, side), round(side * ratio)) for side in (h, w))  # at least 4 x 4 cells
        coarse = normal(keys, (k * c, gh, gw)).view(a * k, c, gh, gw)
        fine = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)  # (A * K, C, H, W)
        return fine.reshape(a, k, c * h * w)
    if prior == "perlin":
        return perlin(keys, k, (c, h, w), frequency).reshape(a, k, c * h * w)
    raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")


def perlin(keys: torch.Tensor, k: int, shape: tuple[int, int, int], frequency: int) -> torch.Tensor:
    """(A,) keys -> (A, K, C, H, W) Perlin noise: random unit gradients on a (F+1) x (F+1) lattice,
    dotted with each pixel's offsets to its cell's four corners, blended with the quintic fade."""
    a, (c, h, w) = keys.shape[0], shape
    f = frequency
    angle = 2 * math.pi * uniform(keys, (k * c, f + 1, f + 1))  # (A, K*C, F+1, F+1)
    gx, gy = torch.cos(angle), torch.sin(angle)
    ys = torch.linspace(0, f, h + 1, device=keys.device)[:-1] + f / (2 * h)  # pixel centres in lattice units
    xs = torch.linspace(0, f, w + 1, device=keys.device)[:-1] + f / (2 * w)
    y0, x0 = ys.floor().long().clamp(max=f - 1), xs.floor().long().clamp(max=f - 1)  # (H,), (W,)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]  # (H, 1), (1, W) offsets inside the cell

    def corner(dy: int, dx: int) -> torch.Tensor:  # (A, K*C, H, W) dot(gradient, offset)
        iy, ix = (y0 + dy)[:, None], (x0 + dx)[None, :]
        return gx[:, :, iy, ix] * (fx - dx) + gy[:, :, iy, ix] * (fy - dy)

    def fade(t: torch.Tensor) -> torch.Tensor:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(fx), fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return (top * (1 - v) + bottom * v).view(a, k, c, h, w)


def starting_noise(prior: str, keys: torch.Tensor, shape: tuple[int, ...], *, ratio: float = 0.125,
                   frequency: int = 6) -> torch.Tensor:
    """(T,) keys -> (T, D) random images in [0, 1] to start an untargeted attack from: uniform noise per
    pixel ("normal"), or uniform noise on the prior's coarse grid, upsampled (smooth images start much
    closer to the boundary of a natural-image classifier)."""
    t, (c, h, w) = keys.shape[0], shape
    if prior == "normal":
        return uniform(keys, (c * h * w,))
    cells = [frequency, frequency] if prior == "perlin" else [max(min(MIN_GRID, side), round(side * ratio))
                                                              for side in (h, w)]
    coarse = uniform(keys, (c, *cells)).view(t, c, *cells)
    return F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False).reshape(t, c * h * w)
