"""The test sets robustness benchmarks evaluate on: CIFAR-10 and CIFAR-100 (Krizhevsky, "Learning Multiple
Layers of Features from Tiny Images", 2009) through torchvision's datasets with a local root (downloaded into it
where absent and the machine has internet), and RobustBench's ImageNet evaluation subset (the 5,000 validation
images its leaderboard uses, listed in robustbench's helper_files) from a local ImageNet validation folder.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.core.errors import AdvlabError, first_line
from advlab.data.files import decode_files, package_dir
from advlab.data.image_set import ImageSet, first_n
from advlab.data.tensors import tensor_set

# robustbench 1.1.1's wheel pins timm==1.0.9 and imports a module no registry package provides: no deps
ROBUSTBENCH_EXTRA = "pip install 'advlab[robustbench]' && pip install --no-deps robustbench==1.1.1"
CIFAR_URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
              "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"}


def load_cifar(spec: str, scheme: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """`cifar10:DIR[:train|test]` / `cifar100:DIR[:train|test]` (default test): torchvision's CIFAR in DIR,
    labels and class names from the dataset, images as stored (32 px, uint8)."""
    import torchvision

    root, _, split = arg.partition(":")
    if split not in ("", "train", "test"):
        raise AdvlabError(f"{spec}: the split after DIR is train or test, got {split!r}")
    dataset_class = torchvision.datasets.CIFAR10 if scheme == "cifar10" else torchvision.datasets.CIFAR100
    folder = Path(root).expanduser()
    try:
        dataset = dataset_class(root=str(folder), train=split == "train", download=True)
    except Exception as exc:  # no network, a refused download, a corrupt archive
        raise AdvlabError(f"{spec}: no {scheme.upper()} in {folder}, and downloading it failed ({type(exc).__name__}: "
                          f"{first_line(exc)}); download {CIFAR_URLS[scheme]} and extract it into {folder}") from None
    x = torch.from_numpy(dataset.data)  # (N, 32, 32, 3) uint8
    y = torch.as_tensor(dataset.targets, dtype=torch.int64)
    if model.num_classes != len(dataset.classes):
        raise AdvlabError(f"{spec} has {len(dataset.classes)} classes but {model.name} has {model.num_classes}; "
                          f"evaluate a {len(dataset.classes)}-class model on it")
    images = tensor_set(x, y, {}, model, n, spec, f"{scheme}-{split or 'test'}")
    images.class_names = tuple(dataset.classes)
    return images


def load_robustbench_imagenet(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """`robustbench-imagenet:DIR`: RobustBench's 5,000-image ImageNet evaluation subset, in its order, from
    DIR/val/<wnid>/<file>.JPEG (ImageNet's validation set in class folders, as robustbench reads it)."""
    helper = _robustbench_helper_files()
    root = Path(arg).expanduser()
    val = root / "val" if (root / "val").is_dir() else root
    listed = [line.strip() for line in (helper / "imagenet_test_image_ids.txt").read_text().splitlines() if line.strip()]
    index: dict[str, Any] = json.loads((helper / "imagenet_class_to_id_map.json").read_text())
    if model.num_classes != len(index):
        raise AdvlabError(f"{spec} holds ImageNet's {len(index)} classes but {model.name} has {model.num_classes}")
    wanted = first_n(listed, n, spec)
    files = [val / rel for rel in wanted]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise AdvlabError(f"{spec}: {len(missing)} of the {len(files)} images of RobustBench's ImageNet subset are not "
                          f"in {val} (first: {missing[0]}); give the folder that holds ImageNet's validation set as "
                          "val/<wnid>/<file>.JPEG")
    labels = torch.tensor([int(index[rel.split("/")[0]]) for rel in wanted], dtype=torch.int64)
    return ImageSet(decode_files(files, model), labels, wanted, spec, "ground-truth")


def _robustbench_helper_files() -> Path:
    package = package_dir("robustbench")
    folder = package / "helper_files" if package is not None else None
    if folder is None or not (folder / "imagenet_test_image_ids.txt").is_file():
        raise AdvlabError("robustbench-imagenet:DIR lists its images from robustbench, which is not installed: "
                          f"{ROBUSTBENCH_EXTRA}")
    return folder


__all__ = ["ROBUSTBENCH_EXTRA", "load_cifar", "load_robustbench_imagenet"]
