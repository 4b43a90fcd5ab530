"""Dense adversarial targets shared by the dense tasks (segmentation pixels, detection proposals):
each object class present in an image goes to a class absent from it (Xie et al., ICCV 2017)."""
from __future__ import annotations

import torch

from advlab.core.criteria import IGNORE, label_dtype
from advlab.core.images import Images, as_images
from advlab.core.rng import KEYS_BATCH, keys_of, step_keys, uniform

TARGET_STREAM = 31  # advlab.core.rng stream of the adversarial labels
SLICE = 64  # images of reference maps widened to int64 at a time


def set_keys(x: torch.Tensor | Images, seed: int) -> torch.Tensor:
    """(N,) image keys of a whole set, its images streamed (`keys_of`)."""
    return keys_of(as_images(x).batches(KEYS_BATCH), seed)


def adversarial_labels(x: torch.Tensor | Images, reference: torch.Tensor, num_classes: int,
                       seed: int) -> torch.Tensor:
    """(N, H, W) adversarial label maps, as the reference code draws them (cihangxie/DAG,
    `generate_mapping.m`): background (class 0) and void stay; each foreground class present in an
    image goes to a different foreground class, one-to-one, chosen at random among the classes absent
    from the image. An image with more present classes than absent ones (or a model with one
    foreground class) falls back to a random cyclic order of all its classes. Keyed by the seed and
    the image's pixels. (N, *S) like `reference`, in `label_dtype` (uint8 for up to 255 classes)."""
    n, k = reference.shape[0], num_classes
    keys = step_keys(set_keys(x, seed), TARGET_STREAM, 0)  # (N,)
    draws = uniform(keys, (k,))  # (N, K) in [0, 1)
    parts = [slice(i, i + SLICE) for i in range(0, n, SLICE)]  # no (N, P) int64 temporary
    present = torch.zeros(n, k, dtype=torch.bool, device=reference.device)  # (N, K)
    for s in parts:
        present[s] = present[s].scatter(1, _safe(reference[s]), True)
    foreground = torch.arange(k, device=reference.device) > 0  # (K,)
    present_fg, absent_fg = present & foreground, ~present & foreground
    # the j-th present class (in random order) goes to the j-th absent class (in random order)
    sources = (draws + 2.0 * ~present_fg).argsort(dim=1)  # (N, K): present foreground classes first
    targets = (draws + 2.0 * ~absent_fg).argsort(dim=1)  # (N, K): absent foreground classes first
    successor = torch.arange(k, device=reference.device).expand(n, k).clone()  # identity: background, absent
    successor.scatter_(1, sources, torch.where(present_fg.gather(1, sources), targets, sources))
    order = draws.argsort(dim=1)  # (N, K): the fallback, a random cyclic order of the classes
    cyclic = torch.empty_like(order).scatter_(1, order, order.roll(-1, dims=1))
    fallback = (present_fg.sum(1) > absent_fg.sum(1)) | (k < 3)  # (N,)
    successor = torch.where(fallback[:, None], cyclic, successor)
    out = torch.empty(reference.shape, dtype=label_dtype(k), device=reference.device)  # (N, *S)
    for s in parts:
        mapped = successor[s].gather(1, _safe(reference[s])).view_as(reference[s])
        out[s] = torch.where(reference[s] == IGNORE, IGNORE, mapped)
    return out


def _safe(reference: torch.Tensor) -> torch.Tensor:
    """(S, *P) reference classes -> (S, P) int64 indices, void as class 0 (masked out by the callers)."""
    return torch.where(reference == IGNORE, 0, reference).flatten(1).long()
