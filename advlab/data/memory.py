"""Images a Python caller already holds: an `(x, y)` pair of tensors or arrays, a map-style
`torch.utils.data.Dataset` of `(image, label)` items, or a `DataLoader` over one. They become the same
`ImageSet` a `tensors:FILE` source gives (`advlab.data.tensors`), so a run on them is the run on that
file; a Dataset is read on demand, a batch of images at a time, as the command line streams its files.

Their source is named `memory:KIND` in results.json and config.yaml; such a run is continued from
Python (`advlab.evaluate(..., out=DIR)` on the same objects), not with `advlab run --resume`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from advlab.core.errors import AdvlabError
from advlab.core.images import Images
from advlab.data.image_set import ImageSet, annotations, first_n
from advlab.data.sources import MEMORY
from advlab.data.tensors import as_tensor, check_labels, tensor_set


def images_in_memory(data: Any, model: nn.Module, n: int | None = None) -> ImageSet:
    """`data` ((x, y), x alone, a Dataset or a DataLoader) as the ImageSet of its first `n` images."""
    if isinstance(data, DataLoader):
        data = data.dataset
    if isinstance(data, torch.Tensor | np.ndarray):
        data = (data, None)
    if isinstance(data, tuple | list) and len(data) == 2 and not isinstance(data[0], tuple | list):
        x, y = data
        spec = f"{MEMORY}:tensors"
        x = as_tensor(x, "x", spec)
        y = None if y is None else as_tensor(y, "y", spec)
        return tensor_set(x, y, {}, model, n, spec, "x")
    if isinstance(data, IterableDataset):
        raise AdvlabError("an IterableDataset cannot be read in a fixed order by index; pass a map-style Dataset "
                          "or the (x, y) tensors")
    if isinstance(data, Dataset):
        return _dataset_set(data, model, n)
    raise AdvlabError(f"data is a {type(data).__name__}; pass (x, y) tensors, a Dataset, a DataLoader or a "
                      "source name such as 'tensors:FILE' (`advlab list`)")


def _dataset_set(dataset: Dataset, model: nn.Module, n: int | None) -> ImageSet:
    """A map-style Dataset of (image, label) items: images read on demand, labels read up front (its
    `targets` attribute where it has one, as torchvision's datasets do; else every item once)."""
    spec = f"{MEMORY}:{type(dataset).__name__}"
    if annotations(model) != "labels":
        raise AdvlabError(f"{spec}: a Dataset serves classifiers here; for a {model.task} model pass (x, y) "
                          "tensors (masks as y) or a tensors:FILE")
    try:
        count = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise AdvlabError(f"{spec} has no len(); pass a map-style Dataset or the (x, y) tensors") from None
    keep = first_n(list(range(count)), n, spec)
    if not keep:
        raise AdvlabError(f"{spec} holds no images")
    first = _image(dataset[0], spec)  # (C, H, W)
    targets = getattr(dataset, "targets", None)
    labels = torch.as_tensor(targets)[:len(keep)] if targets is not None else \
        torch.as_tensor([_label(dataset[i], spec) for i in keep])
    channels = model.in_channels
    if first.shape[0] not in (channels, 1):
        raise AdvlabError(f"{spec}: images have {first.shape[0]} channels but the model wants {channels}")
    images = DatasetImages(dataset, (len(keep), channels, *first.shape[1:]), spec)
    y = check_labels(labels, len(keep), model, spec)
    names = [f"{spec[len(MEMORY) + 1:]}[{i}]" for i in keep]
    classes = getattr(dataset, "classes", None)
    return ImageSet(images, y, names, spec, "ground-truth",
                    class_names=tuple(map(str, classes)) if isinstance(classes, Sequence) else None)


class DatasetImages(Images):
    """The items of a map-style Dataset as (N, C, H, W) float32 images in [0, 1], read on demand."""

    def __init__(self, dataset: Dataset, shape: Sequence[int], spec: str) -> None:
        super().__init__(shape)
        self.dataset, self.spec = dataset, spec

    def read(self, index: torch.Tensor) -> torch.Tensor:
        images = [_image(self.dataset[int(i)], self.spec) for i in index]
        out = torch.stack(images) if images else torch.zeros(0, *self.shape[1:])
        return out.expand(-1, self.shape[1], -1, -1).contiguous()


def _image(item: Any, spec: str) -> torch.Tensor:
    """(C, H, W) float32 in [0, 1] from a Dataset item (image, label): a tensor, an array or a PIL image."""
    image = item[0] if isinstance(item, tuple | list) else item
    if not isinstance(image, torch.Tensor):
        from torchvision.transforms.functional import pil_to_tensor

        image = pil_to_tensor(image) if hasattr(image, "getbands") else as_tensor(image, "image", spec)
    if image.dtype == torch.uint8:
        image = image.float() / 255
    if image.dim() == 2:
        image = image[None]
    if image.dim() != 3 or not image.is_floating_point():
        raise AdvlabError(f"{spec}: an item's image has shape {tuple(image.shape)} dtype {image.dtype}; give "
                          "(C, H, W) float images in [0, 1] (e.g. transforms.ToTensor())")
    if float(image.min()) < 0 or float(image.max()) > 1:
        raise AdvlabError(f"{spec}: image values span [{float(image.min()):g}, {float(image.max()):g}]; give "
                          "[0, 1] images and let the model's mean/std normalise them (drop Normalize from the "
                          "transform, pass mean= and std= to advlab)")
    return image.float()


def _label(item: Any, spec: str) -> int:
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise AdvlabError(f"{spec}: items must be (image, label) pairs")
    return int(item[1])


__all__ = ["DatasetImages", "images_in_memory"]
