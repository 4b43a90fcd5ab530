"""Batched evaluation: clean predictions, one attack over a data set in resumable chunks, metrics."""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.core import atomic, distributed
from advlab.core.attack import Attack, AttackResult
from advlab.core.criteria import Criterion
from advlab.core.device import synchronize
from advlab.core.errors import AdvlabError
from advlab.core.images import ChunkImages, Images, Mapped, TensorImages, as_images, batches
from advlab.core.norms import MEASURES
from advlab.core.per_image import PerImageArrays
from advlab.core.rng import KEYS_BATCH, image_keys, keys_of


@dataclass
class AttackRun:
    """One attack over the chosen images, merged from its chunks."""

    x_adv: Images  # (M, C, H, W) for the M attacked images, read from the chunk files on demand
    success: torch.Tensor  # (M,) bool
    queries: torch.Tensor  # (M,) int64
    wall_s: float  # attack time, summed over chunks (also those loaded on --resume)
    traces: dict[str, torch.Tensor]  # the attack's traces: (T, M) per-step values, padded with each image's last
    extras: dict[str, torch.Tensor]  # other tensors the attack returned (single-chunk runs, e.g. a universal v)
    per_image: dict[str, torch.Tensor] = field(default_factory=dict)  # the attack's per-image results: (M,) each
    distances: dict[str, torch.Tensor] = field(default_factory=dict)  # norm -> (M,) of x_adv from x
    ranks: list[int] = field(default_factory=list)  # per chunk, the torchrun rank that computed it (0 alone)


def attack_in_chunks(attack: Attack, model: nn.Module, x: torch.Tensor | Images, criterion: Criterion, *,
                     starting_points: torch.Tensor | Images | None, batch_size: int, device: torch.device, seed: int,
                     chunk_dir: Path) -> AttackRun:
    """Attack `x` (M, C, H, W) chunk by chunk, its images streamed (decoded ahead in workers where they
    are files); each finished chunk is saved to `chunk_dir`, and chunks already there (same images,
    same settings) are loaded instead of recomputed (`--resume`). Every chunk gets the run's `seed`
    itself: the attack keys its draws by the seed and each image's pixels, so the chunking never
    changes a result. In a sharded run (torchrun, `advlab.core.distributed`) chunk k is computed, or found
    done, by rank k mod K only; the others read its file after a barrier. Only per-image numbers stay
    in memory, in arrays allocated once for all M (`PerImageArrays`: nothing of a chunk outlives it to
    pin the heap); the adversarial images are read back from the chunk files when needed. M = 0
    (nothing to attack) is an empty run."""
    x = as_images(x)
    if len(x) == 0:
        return AttackRun(x_adv=TensorImages(torch.zeros(0, *x.shape[1:])), success=torch.zeros(0, dtype=torch.bool),
                         queries=torch.zeros(0, dtype=torch.long), wall_s=0.0, traces={}, extras={},
                         distances={norm: torch.zeros(0) for norm in MEASURES})
    chunk_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(attack, seed)
    if attack.universal:
        return _attack_set(attack, model, x, criterion, device=device, chunk=chunk_dir / "set.pt",
                           fingerprint=fingerprint, seed=seed)
    starts = list(range(0, len(x), batch_size))
    paths = [chunk_dir / f"chunk-{k:05d}.pt" for k in range(len(starts))]
    ours = [k for k in range(len(starts)) if attack.collective or distributed.mine(k)]
    wanted = torch.cat([torch.arange(starts[k], min(starts[k] + batch_size, len(x))) for k in ours]) if ours else None
    found = PerImageArrays(len(x))  # every chunk's per-image numbers, in arrays allocated once (see per_image)
    ranks, walls, done = [0] * len(starts), [0.0] * len(starts), [False] * len(starts)
    single: dict[str, torch.Tensor] = {}  # a single-chunk run's extras that are not per image (e.g. a universal v)

    def keep(k: int, part: dict[str, Any]) -> None:
        """Chunk k's numbers (its part, without the images) into the run's arrays; nothing of it stays."""
        found.put(starts[k], {key: v for key, v in part.items() if key in _PER_IMAGE or key.startswith(PER_IMAGE)})
        found.put_steps(starts[k], {key: v for key, v in part.items() if key.startswith(TRACE)})
        ranks[k], walls[k], done[k] = int(part.get("rank", 0)), float(part["wall_s"]), True
        if len(starts) == 1:
            single.update((key, v) for key, v in part.items()
                          if key not in _CHUNK_KEYS and not key.startswith((TRACE, PER_IMAGE)))

    for k, xs in zip(ours, x.batches(batch_size, wanted, pin=device.type == "cuda") if ours else ()):
        start = starts[k]
        saved = _saved_chunk(paths[k], fingerprint, xs)
        if saved is not None:
            keep(k, saved)
            continue
        sp = starting_points[start:start + batch_size].to(device) if starting_points is not None else None
        synchronize(device)
        t0 = time.perf_counter()
        result: AttackResult = attack(model, xs.to(device), criterion.subset(slice(start, start + batch_size)),
                                      seed=seed, starting_points=sp)
        synchronize(device)
        x_adv = result.x_adv.cpu()
        part = {"fingerprint": fingerprint, "image_keys": image_keys(xs, 0), "x_adv": x_adv,
                **{f"dist_{norm}": MEASURES[norm].distance(xs, x_adv) for norm in MEASURES},  # images at hand
                "success": result.success.cpu(),
                "queries": result.queries.cpu(), "wall_s": time.perf_counter() - t0, "rank": distributed.rank(),
                **{f"{PER_IMAGE}{k2}": v.cpu() for k2, v in result.per_image.items()},
                **{f"{TRACE}{k2}": v.cpu() for k2, v in result.traces.items()},
                **{k2: v.cpu() for k2, v in result.extras.items() if isinstance(v, torch.Tensor)}}
        atomic.save_tensors(part, paths[k], any_rank=not attack.collective)  # a collective chunk: rank 0 saves
        keep(k, part)
        del result, x_adv, part
    distributed.barrier()  # every rank's chunks are on disk now
    for k, start in enumerate(starts):
        if not done[k]:  # another rank's chunk, which that rank checked or computed
            saved = _saved_chunk(paths[k], fingerprint, None, count=min(batch_size, len(x) - start))
            if saved is None:
                raise AdvlabError(f"chunk {k} of {chunk_dir} is missing after all ranks finished; the run directory "
                                  "must be on a file system every rank shares")
            keep(k, saved)
    arrays = found.complete()
    return AttackRun(
        x_adv=ChunkImages(paths, [min(batch_size, len(x) - start) for start in starts], x.shape[1:]),
        success=arrays["success"],
        queries=arrays["queries"],
        wall_s=float(sum(walls)),
        traces={k.removeprefix(TRACE): v for k, v in sorted(arrays.items()) if k.startswith(TRACE)},
        extras=single,
        per_image={k.removeprefix(PER_IMAGE): v for k, v in arrays.items() if k.startswith(PER_IMAGE)},
        distances={norm: arrays[f"dist_{norm}"] for norm in MEASURES},
        ranks=ranks,
    )


def _attack_set(attack: Attack, model: nn.Module, x: Images, criterion: Criterion, *, device: torch.device,
                chunk: Path, fingerprint: str, seed: int) -> AttackRun:
    """A set-level attack (a universal perturbation) on all M images in one call, which streams them.
    Its checkpoint holds what makes the adversarial images, not the images: they are read back as
    `attack.adversarial(extras)` of the clean ones. Reused on --resume for the same images and settings."""
    keys = keys_of(x.batches(KEYS_BATCH), 0)  # (M,) content hashes
    saved = torch.load(chunk, map_location="cpu", weights_only=True, mmap=True) if chunk.exists() else {}
    if saved.get("fingerprint") != fingerprint or not torch.equal(saved.get("image_keys", keys[:0]), keys):
        synchronize(device)
        t0 = time.perf_counter()
        found = attack.attack_set(model, x, criterion, seed=seed, device=device)
        synchronize(device)
        wall = time.perf_counter() - t0
        extras = {k: v.cpu() for k, v in found.extras.items() if isinstance(v, torch.Tensor)}
        dist = image_distances(x, Mapped(x, attack.adversarial(extras)))
        saved = {"fingerprint": fingerprint, "image_keys": keys, "success": found.success.cpu(),
                 "queries": found.queries.cpu(), "wall_s": wall, "rank": distributed.rank(),
                 **{f"dist_{norm}": d for norm, d in dist.items()}, **extras}
        atomic.save_tensors(saved, chunk)  # every rank computed it together; rank 0 saves
    distributed.barrier()
    extras = {k: v for k, v in saved.items() if k not in _CHUNK_KEYS}
    return AttackRun(x_adv=Mapped(x, attack.adversarial(extras)), success=saved["success"].bool(),
                     queries=saved["queries"].clone(), wall_s=float(saved["wall_s"]), traces={}, extras=extras,
                     distances={norm: saved[f"dist_{norm}"].clone() for norm in MEASURES},
                     ranks=[int(saved["rank"])])


def _saved_chunk(path: Path, fingerprint: str, xs: torch.Tensor | None, *, count: int = 0) -> dict[str, Any] | None:
    """A chunk file written earlier for these images `xs` (resume) and settings, without its images
    (memory-mapped, never read here), else None. `xs` None: a chunk another rank vouched for, checked
    by its settings and image `count`."""
    if not path.exists():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    if saved.get("fingerprint") != fingerprint:
        return None
    keys = saved.get("image_keys")
    if keys is None or (len(keys) != count if xs is None else not torch.equal(keys, image_keys(xs, 0))):
        return None  # image_keys: a content hash, so a chunk is reused only for the same images
    if any(f"dist_{norm}" not in saved for norm in MEASURES):
        return None  # written by an advlab that did not keep distances: recompute
    return {k: v for k, v in saved.items() if k != "x_adv"}


_PER_IMAGE = frozenset({"success", "queries", *(f"dist_{norm}" for norm in MEASURES)})  # (B,) per chunk
PER_IMAGE, TRACE = "per_image_", "trace_"  # names of an attack's per-image results and traces in chunk files
_CHUNK_KEYS = _PER_IMAGE | {"fingerprint", "image_keys", "x_adv", "wall_s", "rank"}


def _fingerprint(attack: Attack, seed: int) -> str:
    text = repr(sorted((k, repr(v)) for k, v in attack.params().items())) + type(attack).__name__ + str(seed)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


DISTANCE_BATCH = 64  # images per slice: the differences never take more memory than this many images


def image_distances(x: torch.Tensor | Images, x_adv: torch.Tensor | Images) -> dict[str, torch.Tensor]:
    """Per-image (N,) distances in every reported norm, computed once per attack row, streaming both
    image sets in slices."""
    found = {norm: torch.zeros(len(x)) for norm in MEASURES}  # (N,) each, filled in place (see per_image)
    cpu, start = torch.device("cpu"), 0
    for a, b in zip(batches(x, DISTANCE_BATCH, cpu), batches(x_adv, DISTANCE_BATCH, cpu)):
        for norm in MEASURES:
            found[norm][start:start + len(a)] = MEASURES[norm].distance(a, b)
        start += len(a)
    return found
