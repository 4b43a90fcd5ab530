"""Images read on demand: a data set, an attack's adversarial images or a perturbed set need not fit
in memory. An `Images` object is (N, C, H, W) float32 in [0, 1] on the CPU; indexing it (an int, a
slice, a (K,) long or (N,) bool tensor) reads those images, and `batches` streams them in order.

Image files are decoded in a `torch.utils.data.DataLoader` with worker processes (pinned memory for a
CUDA device), so decoding the next batch overlaps the work on the current one; every other kind reads
slices of something already at hand (a tensor, a memory-mapped file, resume chunks on disk).

`batches(x, batch_size, device)` takes an `Images` or a plain tensor alike, so the tasks' prediction
loops serve both.
"""
from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from advlab.core.device import between_batches
from advlab.core.errors import AdvlabError

DECODE_WORKERS = 4  # at most; one fewer than the machine's cores, none on a single core


class Images(abc.ABC):
    """(N, C, H, W) float32 images in [0, 1], read on demand (see the module docstring)."""

    dtype = torch.float32

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = torch.Size(shape)  # (N, C, H, W)

    def __len__(self) -> int:
        return int(self.shape[0])

    @abc.abstractmethod
    def read(self, index: torch.Tensor) -> torch.Tensor:
        """(K,) int64 positions -> (K, C, H, W) float32 images, a tensor of their own."""

    def __getitem__(self, key: int | slice | torch.Tensor) -> torch.Tensor:
        if isinstance(key, int):
            return self.read(torch.tensor([key]))[0]
        return self.read(torch.arange(len(self))[key])

    def groups(self, groups: Sequence[torch.Tensor], *, pin: bool = False) -> Iterator[torch.Tensor]:
        """The images of each index group (K_g,) in turn, as (K_g, C, H, W) tensors. Between two
        groups, once the consumer is done with the last, the heap's freed pages go back to the system
        if it has grown and the process opted in (`advlab.core.device.manage_heap`): every streamed loop
        of a long run keeps a flat footprint."""
        for batch in self._groups(groups, pin=pin):
            yield batch
            between_batches()

    def _groups(self, groups: Sequence[torch.Tensor], *, pin: bool) -> Iterator[torch.Tensor]:
        """`groups` without the memory release: what a subclass that reads groups its own way overrides."""
        return (self.read(g) for g in groups)

    def batches(self, batch_size: int, index: torch.Tensor | None = None, *,
                pin: bool = False) -> Iterator[torch.Tensor]:
        """The images at `index` (default all, in order), `batch_size` at a time."""
        index = torch.arange(len(self)) if index is None else index
        return self.groups(index.split(batch_size), pin=pin)

    def subset(self, index: torch.Tensor) -> Images:
        """The images at `index` (K,) as K images of their own, still read on demand."""
        return Subset(self, index)

    def tensor(self) -> torch.Tensor:
        """Every image in memory at once: for small sets and the tasks that need them whole."""
        return self.read(torch.arange(len(self)))


class TensorImages(Images):
    """Images already in memory."""

    def __init__(self, x: torch.Tensor) -> None:  # (N, C, H, W) float32
        super().__init__(x.shape)
        self.x = x

    def read(self, index: torch.Tensor) -> torch.Tensor:
        return self.x[index]

    def __getitem__(self, key: int | slice | torch.Tensor) -> torch.Tensor:
        return self.x[key]

    def tensor(self) -> torch.Tensor:
        return self.x


class StoredImages(Images):
    """Images in a stored tensor (e.g. memory-mapped from a file), uint8 or float, converted per read:
    (N, C', H, W) -> float32 in [0, 1] with `channels` channels (grayscale repeated to 3)."""

    def __init__(self, raw: torch.Tensor, channels: int) -> None:
        super().__init__((raw.shape[0], channels, *raw.shape[2:]))
        self.raw, self.channels = raw, channels

    def read(self, index: torch.Tensor) -> torch.Tensor:
        x = self.raw[index]
        x = x.to(torch.float32).div_(255.0) if x.dtype == torch.uint8 else x.to(torch.float32)
        return x.expand(-1, self.channels, -1, -1).contiguous()


class RepeatedImage(Images):
    """One image, n times (e.g. the starting point of every image of a targeted decision-based attack)."""

    def __init__(self, image: torch.Tensor, n: int) -> None:  # (C, H, W)
        super().__init__((n, *image.shape))
        self.image = image

    def read(self, index: torch.Tensor) -> torch.Tensor:
        return self.image.expand(len(index), *self.image.shape).clone()


class Subset(Images):
    """The images of `base` at `index`, in that order."""

    def __init__(self, base: Images, index: torch.Tensor) -> None:
        super().__init__((len(index), *base.shape[1:]))
        self.base, self.index = base, index

    def read(self, index: torch.Tensor) -> torch.Tensor:
        return self.base.read(self.index[index])

    def _groups(self, groups: Sequence[torch.Tensor], *, pin: bool) -> Iterator[torch.Tensor]:
        return self.base._groups([self.index[g] for g in groups], pin=pin)


class Mapped(Images):
    """`fn` applied to every batch of `base` (e.g. a universal perturbation added): (B, C, H, W) -> same."""

    def __init__(self, base: Images, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__(base.shape)
        self.base, self.fn = base, fn

    def read(self, index: torch.Tensor) -> torch.Tensor:
        return self.fn(self.base.read(index))

    def _groups(self, groups: Sequence[torch.Tensor], *, pin: bool) -> Iterator[torch.Tensor]:
        return (self.fn(x) for x in self.base._groups(groups, pin=pin))


class Replaced(Images):
    """`base` with the images at `index` (K,) replaced by `replacement` (K images): an attack's
    adversarial images over the whole set, the clean image where it did not attack."""

    def __init__(self, base: Images, index: torch.Tensor, replacement: Images) -> None:
        super().__init__(base.shape)
        self.base, self.replacement = base, replacement
        self.slot = torch.full((len(base),), -1, dtype=torch.long)  # (N,) position in replacement, -1 = base
        self.slot[index] = torch.arange(len(index))

    def _merge(self, kept: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(K_base, C, H, W) base images of `index`'s unreplaced positions -> (K, C, H, W), the
        replacements read in; the base is never read where it is replaced."""
        slots = self.slot[index]
        hit = slots >= 0
        out = torch.empty(len(index), *self.shape[1:], dtype=kept.dtype, device=kept.device)
        out[~hit] = kept
        if bool(hit.any()):
            out[hit] = self.replacement.read(slots[hit]).to(kept.device)
        return out

    def read(self, index: torch.Tensor) -> torch.Tensor:
        return self._merge(self.base.read(index[self.slot[index] < 0]), index)

    def _groups(self, groups: Sequence[torch.Tensor], *, pin: bool) -> Iterator[torch.Tensor]:
        kept = [g[self.slot[g] < 0] for g in groups]  # the positions the base still supplies
        return (self._merge(x, g) for g, x in zip(groups, self.base._groups(kept, pin=pin)))


class ChunkImages(Images):
    """Images saved in consecutive chunk files under key `key` (an attack's resume chunks): read one
    chunk at a time, memory-mapped, so only the chunks a read touches are paged in."""

    def __init__(self, files: list[Path], counts: list[int], image_shape: Sequence[int], key: str = "x_adv") -> None:
        super().__init__((sum(counts), *image_shape))
        self.files, self.key = files, key
        self.starts = torch.tensor([0, *counts]).cumsum(0)  # (chunks + 1,) first position of each chunk
        self._open: tuple[int, torch.Tensor] | None = None  # the chunk last read

    def _chunk(self, k: int) -> torch.Tensor:
        if self._open is None or self._open[0] != k:
            saved = torch.load(self.files[k], map_location="cpu", weights_only=True, mmap=True)
            self._open = (k, saved[self.key])
        return self._open[1]

    def read(self, index: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(index), *self.shape[1:], dtype=torch.float32)
        chunk_of = torch.searchsorted(self.starts, index, right=True) - 1  # (K,)
        for k in chunk_of.unique().tolist():
            hit = chunk_of == k
            out[hit] = self._chunk(k)[index[hit] - self.starts[k]].float()
        return out


class FileImages(Images):
    """Image files decoded on demand by `decode(path) -> (C, H, W) float32`, all of shape `image_shape`;
    `batches` decodes in DataLoader workers."""

    def __init__(self, files: list[Path], image_shape: Sequence[int],
                 decode: Callable[[Path], torch.Tensor]) -> None:
        super().__init__((len(files), *image_shape))
        self.files, self.decode = files, decode

    def read(self, index: torch.Tensor) -> torch.Tensor:
        if len(index) == 0:
            return torch.zeros(0, *self.shape[1:])
        return torch.stack([self.decode(self.files[i]) for i in index.tolist()])

    def _groups(self, groups: Sequence[torch.Tensor], *, pin: bool) -> Iterator[torch.Tensor]:
        lists = [g.tolist() for g in groups if len(g)]  # an empty group is answered without the loader
        workers = decode_workers() if len(lists) > 1 else 0  # one batch: no processes to start
        loader = iter(DataLoader(_Decoded(self), batch_sampler=lists, num_workers=workers, pin_memory=pin,
                                 collate_fn=_stack_or_error))
        for g in groups:
            batch = next(loader) if len(g) else torch.zeros(0, *self.shape[1:])
            if isinstance(batch, str):  # a file a worker could not decode: its one-line message
                raise AdvlabError(batch)
            yield batch


class _Decoded(Dataset):
    """The files of a FileImages as a map-style data set; a decoding error becomes its message, so
    that it reaches the main process as one line rather than a worker's traceback."""

    def __init__(self, images: FileImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor | str:
        try:
            return self.images.decode(self.images.files[i])
        except AdvlabError as exc:
            return str(exc)


def _stack_or_error(items: list[torch.Tensor | str]) -> torch.Tensor | str:
    errors = [item for item in items if isinstance(item, str)]
    return errors[0] if errors else torch.stack(items)  # type: ignore[arg-type]


def decode_workers() -> int:
    """DataLoader workers for decoding: one fewer than the cores, at most DECODE_WORKERS."""
    return max(0, min(DECODE_WORKERS, (os.cpu_count() or 1) - 1))


def as_images(x: torch.Tensor | Images) -> Images:
    return x if isinstance(x, Images) else TensorImages(x)


def batches(x: torch.Tensor | Images, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """(B, C, H, W) batches of `x` in order, on `device` (decoded in workers and pinned for CUDA where
    `x` holds image files)."""
    if isinstance(x, Images):
        for batch in x.batches(batch_size, pin=device.type == "cuda"):
            yield batch.to(device, non_blocking=True)
        return
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size].to(device)
        between_batches()
