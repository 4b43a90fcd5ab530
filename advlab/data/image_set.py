"""`ImageSet`: the images of a data source with their labels, names and notes, as every source returns them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

import torch

from advlab.core.errors import AdvlabError
from advlab.core.images import Images, as_images

T = TypeVar("T")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass
class ImageSet:
    images: Images  # (N, C, H, W) float32 in [0, 1], CPU, read on demand (a tensor given here is wrapped)
    # (N, ...) the task's annotations: classification (N,) int64 class index in the model's classes, -1 = unknown;
    # segmentation (N, H, W) uint8 (int64 for class ids above 255), 255 = void; a task may define its own
    # (e.g. (N, L) attribute labels)
    y: torch.Tensor
    names: list[str]  # one per image: file name (relative path for folders), or "FILE[i]" for tensors
    source: str  # the spec string given, e.g. "imagenet-samples", "folder:/data/val"
    label_source: str  # "ground-truth" | "prediction" | "none"
    class_names: tuple[str, ...] | None = None  # the source's own class names, where it knows them
    boxes: list[dict[str, torch.Tensor]] | None = None  # detection: per image boxes (G, 4) x1 y1 x2 y2, labels (G,)
    notes: list[str] = field(default_factory=list)  # what loading changed on the user's behalf (results.json notes)

    def __post_init__(self) -> None:
        self.images = as_images(self.images)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def x(self) -> torch.Tensor:  # (N, C, H, W)
        """Every image in memory at once (free for in-memory sources): for small sets and the tasks
        that need them whole (segmentation, detection); runs over large sets stream `images`."""
        return self.images.tensor()


def annotations(model: object) -> str:
    """What a model's images are labeled with, as its wrapper declares (`advlab.zoo.wrappers`): "labels"
    (a class per image), "masks" (a class per pixel) or "boxes" (boxes with a class each)."""
    return str(getattr(model, "annotations", "labels"))


def first_n(items: list[T], n: int | None, spec: str) -> list[T]:
    if n is not None and n > len(items):
        raise AdvlabError(f"{spec} has {len(items)} images; lower -n to at most {len(items)}")
    return items[:n]
