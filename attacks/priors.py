"""Proposal priors for decision-based attacks: where the random directions come from.

- "normal": i.i.d. Gaussian noise over every pixel (Brendel et al., ICLR 2018).
- "lowfreq": Gaussian noise on a coarse grid (`ratio` of the image side, at least 4 cells), bilinearly upsampled:
  natural-image classifiers are far more sensitive to low frequencies, so such directions cross the
  boundary with fewer queries (Guo, Frank & Weinberger, "Low Frequency Adversarial Perturbation",
  UAI 2019).
- "perlin": Perlin gradient noise with `frequency` lattice cells per side (Perlin, SIGGRAPH 1985),
  the prior of Brunner et al., "Guessing Smart: Biased Sampling for Efficient Black-Box
  Adversarial Attacks", ICCV 2019.

`level` refines a prior: its grid has 2**level times the cells per side, up to the image's own
resolution (lowfreq: the coarse grid's cells doubled, perlin: `frequency` doubled; "normal" has no
grid). The Boundary Attack starts coarse and refines as its walk spends queries
(`BoundaryAttack.refine_after`).

Every draw comes from the counter-based per-image streams of `advlab.core.rng` (keys (A,) -> noise
(A, K, C, H, W)), so a prior keeps the attack's batch invariance; generation is a few elementwise
passes over the images, small next to one forward pass of the model.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from advlab.core.rng import normal, uniform

PRIORS = ("normal", "lowfreq", "perlin")
MIN_GRID = 4  # lowfreq: the coarse grid has at least this many cells per side (small images)


def proposals(prior: str, keys: torch.Tensor, k: int, shape: tuple[int, ...], *, ratio: float = 0.125,
              frequency: int = 6, level: int = 0) -> torch.Tensor:
    """(A,) keys -> (A, K, D) noise directions (D = C * H * W), unnormalised; `level` refines the grid."""
    a, (c, h, w) = keys.shape[0], shape
    if prior == "normal":
        return normal(keys, (k, c * h * w))
    if prior == "lowfreq":
        gh, gw = (min(side, max(min(MIN_GRID, side), round(side * ratio)) * 2**level) for side in (h, w))
        coarse = normal(keys, (k * c, gh, gw)).view(a * k, c, gh, gw)
        fine = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)  # (A * K, C, H, W)
        return fine.reshape(a, k, c * h * w)
    if prior == "perlin":
        return perlin(keys, k, (c, h, w), min(frequency * 2**level, max(h, w))).reshape(a, k, c * h * w)
    raise ValueError(f"prior must be one of {', '.join(PRIORS)}, got {prior!r}")


def mirrored(eta: torch.Tensor, k: int) -> torch.Tensor:
    """(A, ceil(K/2), D) draws -> (A, K, D) antithetic proposals eta_1, -eta_1, eta_2, -eta_2, ...
    (the last mirror dropped for odd K): mirrored sampling, as in evolution strategies (Brockhoff,
    Auger, Hansen, Arnold & Hohm, "Mirrored Sampling and Sequential Selection for Evolution
    Strategies", PPSN 2010)."""
    return torch.stack([eta, -eta], dim=2).flatten(1, 2)[:, :k]


def perlin(keys: torch.Tensor, k: int, shape: tuple[int, int, int], frequency: int) -> torch.Tensor:
    """(A,) keys -> (A, K, C, H, W) Perlin noise: random unit gradients on a (F+1) x (F+1) lattice,
    dotted with each pixel's offsets to its cell's four corners, blended with the quintic fade.

    The blend is separable, so the whole field is two small matrix products per channel,
    N = Py Gx Qx^T + Qy Gy Px^T, where P holds each pixel's fade weights on its two lattice
    neighbours and Q those weights times the pixel's offset to them (no per-pixel gathers)."""
    a, (c, h, w) = keys.shape[0], shape
    angle = 2 * math.pi * uniform(keys, (k * c, frequency + 1, frequency + 1))  # (A, K*C, F+1, F+1)
    py, qy = _fade_weights(h, frequency, keys.device)  # (H, F+1) each
    px, qx = _fade_weights(w, frequency, keys.device)  # (W, F+1) each
    noise = py @ torch.cos(angle) @ qx.T + qy @ torch.sin(angle) @ px.T  # (A, K*C, H, W)
    return noise.view(a, k, c, h, w)


def _fade_weights(side: int, frequency: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(side, F+1) fade weights of each pixel centre on its cell's two lattice points, and the same
    weights times the pixel's offset from each point (t - 0 and t - 1 in cell units)."""
    t = torch.linspace(0, frequency, side + 1, device=device)[:-1] + frequency / (2 * side)  # pixel centres
    cell = t.floor().long().clamp(max=frequency - 1)  # (side,)
    f = t - cell  # offset inside the cell, in [0, 1)
    fade = f * f * f * (f * (f * 6 - 15) + 10)
    weights = torch.zeros(side, frequency + 1, device=device)
    offsets = torch.zeros(side, frequency + 1, device=device)
    rows = torch.arange(side, device=device)
    weights[rows, cell], weights[rows, cell + 1] = 1 - fade, fade
    offsets[rows, cell], offsets[rows, cell + 1] = (1 - fade) * f, fade * (f - 1)
    return weights, offsets


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
