"""Fashion-MNIST (Xiao et al., 2017) and the lab's fashion-scenes composed from it: the real data
the CPU experiments train and attack on. Debian's `dataset-fashion-mnist` holds the files offline;
elsewhere torchvision's dataset class downloads them into advlab's cache."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from advlab.core.errors import AdvlabError
from advlab.data.files import channel_notes
from advlab.data.image_set import ImageSet, annotations, first_n
from advlab.data.scenes import SCENE_CLASSES, compose
from advlab.data.tensors import match_channels

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
# Where Fashion-MNIST's idx files may already be: Debian's dataset-fashion-mnist, then advlab's cache.
FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"), Path.home() / ".cache" / "advlab" / "FashionMNIST" / "raw")
SCENES_DEFAULT_N = {"train": 4000, "test": 1000}  # fashion-scenes without -n


def load_fashion_mnist(spec: str, split: str, model: nn.Module, n: int | None) -> ImageSet:
    """Fashion-MNIST (Xiao et al., 2017): 60k train / 10k test 28x28 grayscale images, 10 classes."""
    if model.num_classes != 10:
        raise AdvlabError(f"{spec} is labeled in 10 classes; the model has {model.num_classes}")
    images, labels = _fashion_arrays(split)
    count = len(first_n(range(images.shape[0]), n, spec))
    x = torch.from_numpy(images[:count].copy()).unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28)
    notes = channel_notes(1, model.in_channels, spec)
    x = match_channels(x, model, spec)
    names = [f"{split}[{i}]" for i in range(count)]
    return ImageSet(x, torch.from_numpy(labels[:count].astype(np.int64)), names, spec, "ground-truth",
                    FASHION_CLASSES, notes=notes)


def _fashion_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's (N, 28, 28) uint8 images and (N,) uint8 labels of a split."""
    prefix = "train" if split == "train" else "t10k"
    folder = next((d for d in FASHION_DIRS if (d / f"{prefix}-images-idx3-ubyte.gz").is_file()), None)
    if folder is None:
        folder = _download_fashion_mnist()
    return _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")


def load_fashion_scenes(spec: str, split: str, model: nn.Module, n: int | None) -> ImageSet:
    """fashion-scenes (advlab.data.scenes): RGB canvases of real Fashion-MNIST garments with per-pixel masks
    (for segmenters) or boxes (for detectors)."""

    if model.num_classes != len(SCENE_CLASSES) or model.in_channels != 3:
        raise AdvlabError(f"{spec} is RGB and labeled in {len(SCENE_CLASSES)} classes (background and 10 garments); "
                          f"the model takes {model.in_channels} channels and has {model.num_classes} classes; use "
                          "--model advlab.zoo.segnet:fashion_segnet (--task segmentation) or "
                          "advlab.zoo.detnet:fashion_detector (--task detection)")
    images, labels = _fashion_arrays(split)
    count = n or SCENES_DEFAULT_N[split]
    garments = torch.from_numpy(images.copy()).float().div_(255.0)  # (M, 28, 28)
    scenes = compose(garments, torch.from_numpy(labels.astype(np.int64)), count, split=split)
    names = [f"{split}-scene[{i}]" for i in range(count)]
    if annotations(model) == "boxes":  # not masks
        boxes = [{"boxes": b, "labels": g} for b, g in zip(scenes.boxes, scenes.box_labels)]
        return ImageSet(scenes.x, torch.full((count,), -1), names, spec, "ground-truth", SCENE_CLASSES, boxes)
    return ImageSet(scenes.x, scenes.masks, names, spec, "ground-truth", SCENE_CLASSES)


def _download_fashion_mnist() -> Path:
    """The normal path with internet: torchvision's dataset class with advlab's cache as its root."""
    import torchvision

    root = FASHION_DIRS[-1].parent.parent
    try:
        torchvision.datasets.FashionMNIST(root=str(root), train=True, download=True)
        torchvision.datasets.FashionMNIST(root=str(root), train=False, download=True)
    except Exception as exc:
        raise AdvlabError(f"Fashion-MNIST is not on this machine and could not be downloaded ({type(exc).__name__}); "
                          "install it with `apt-get install dataset-fashion-mnist`, or connect once") from exc
    return FASHION_DIRS[-1]


def _read_idx(path: Path) -> np.ndarray:
    """An idx file (LeCun's MNIST format), gzipped: big-endian dims after a 4-byte magic."""
    import gzip

    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise AdvlabError(f"cannot read {path}: {exc}; reinstall the data set") from exc
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(int(d) for d in dims))


