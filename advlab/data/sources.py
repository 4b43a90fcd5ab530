"""Image sources for attacks: `load_images(spec, model)` dispatches on the spec and returns an
`ImageSet` of [0, 1] float32 CPU images in the model's channel count and (for files) its input size,
with labels in the model's class indices (or per-pixel masks for segmenters).

Here: the catalog of sources, foolbox's ImageNet samples, class folders and offline photos. Elsewhere:
`fashion` (fashion-mnist, fashion-scenes), `tensors` (tensors:FILE), `masks` (pairs:DIR, voc:ROOT),
`boxes` (voc boxes, coco), `files` (decoding image files), `image_set` (what every source returns).
"""
from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from advlab.core.catalog import Catalog
from advlab.core.errors import AdvlabError
from advlab.core.images import FileImages
from advlab.data.files import decode_files, file_notes, is_image, package_dir
from advlab.data.image_set import IMAGE_SUFFIXES, ImageSet, annotations, first_n

T = TypeVar("T")
log = logging.getLogger("advlab")
_WNID = re.compile(r"n\d{8}")
_SAMPLE = re.compile(r"imagenet_(\d+)_(\d+)\.jpg")
# Real RGB photos inside installed wheels: (package, path inside the package).
PHOTO_FILES = (
    ("skimage", "data/astronaut.png"), ("skimage", "data/chelsea.png"), ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"), ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/hubble_deep_field.jpg"), ("skimage", "data/retina.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg"),
)


# Image sources by scheme, the part of the spec before the first ':' ("folder:PATH" -> "folder").
DATA = Catalog("data", group="advlab.data", builtin=(), noun="image source")
Source = Callable[[str, str, nn.Module, "int | None"], ImageSet]  # (spec, argument, model, n) -> images


def image_source(scheme: str, *, usage: str, argument: Callable[[str | None], bool],
                 python_only: bool = False) -> Callable[[Source], Source]:
    """Decorator: register a loader `(spec, argument, model, n) -> ImageSet` for `scheme`; `argument`
    says which arguments it takes (None: the spec has no ':'); `python_only` keeps it out of --data's help."""

    def wrap(load: Source) -> Source:
        DATA.add(scheme, load, usage=usage, argument=argument, python_only=python_only)
        return load

    return wrap


def schemes() -> str:
    """What `--data` takes, in the order the sources were registered."""
    return ", ".join(e.meta["usage"] for e in DATA.in_order() if not e.meta["python_only"])


def load_images(spec: str, model: nn.Module, *, n: int | None = None) -> ImageSet:
    """Load the first `n` (default: all) images of `spec` in deterministic order, labeled for `model`."""
    if n is not None and n <= 0:
        raise AdvlabError(f"-n must be a positive number of images, got {n}")
    scheme, sep, arg = spec.partition(":")
    if scheme not in DATA or not DATA.get(scheme).meta["argument"](arg if sep else None):
        hint = f" (did you mean folder:{spec}?)" if Path(spec).is_dir() else ""
        raise AdvlabError(f"unknown image source {spec!r}{hint}; use one of: {schemes()}")
    data = DATA.get(scheme).obj(spec, arg, model, n)
    if isinstance(data.images, FileImages) and model.input_size is not None:
        data.notes += file_notes(data.images.files, model.input_size, model.in_channels, spec)
    for note in data.notes:
        log.warning(note)
    return data


def _none(arg: str | None) -> bool:
    return arg is None


def _split(arg: str | None) -> bool:
    return arg in (None, "", "train", "test")


def _given(arg: str | None) -> bool:
    return bool(arg)


@image_source("imagenet-samples", usage="imagenet-samples", argument=_none)
def _imagenet_samples_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """foolbox's 20 ImageNet validation photos, with their labels (offline)."""
    return _imagenet_samples(spec, model, n)


@image_source("photos", usage="photos", argument=_none)
def _photos_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """Real photos shipped inside installed wheels, labeled by the model's clean prediction (offline)."""
    return _photos(spec, model, n)


@image_source("fashion-mnist", usage="fashion-mnist[:train|test]", argument=_split)
def _fashion_mnist(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """Fashion-MNIST (Debian's dataset-fashion-mnist, or torchvision's download)."""
    from advlab.data.fashion import load_fashion_mnist

    return load_fashion_mnist(spec, arg or "test", model, n)


@image_source("fashion-scenes", usage="fashion-scenes[:train|test]", argument=_split)
def _fashion_scenes(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """Fashion-MNIST items on textured canvases, with masks and boxes (the lab's segmentation and detection data)."""
    from advlab.data.fashion import load_fashion_scenes

    return load_fashion_scenes(spec, arg or "test", model, n)


@image_source("folder", usage="folder:PATH", argument=_given)
def _folder_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """Image files in one subfolder per class (a class name, index or ImageNet WordNet id)."""
    return _folder(spec, Path(arg).expanduser(), model, n)


@image_source("tensors", usage="tensors:FILE", argument=_given)
def _tensors_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """An .npz or .pt file with `x` (N images) and optional `y`."""
    from advlab.data.tensors import load_tensors

    return load_tensors(spec, arg, model, n)


@image_source("pairs", usage="pairs:DIR", argument=_given)
def _pairs_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """Image and mask files side by side, for segmentation models."""
    from advlab.data.masks import load_pairs

    _need(spec, model, "masks", "holds per-pixel masks for segmentation models; {name} is not a segmenter")
    return load_pairs(spec, Path(arg).expanduser(), model, n)


@image_source("voc", usage="voc:ROOT[:YEAR[:SPLIT]]", argument=_given)
def _voc_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """PASCAL VOC through torchvision: boxes for a detector, per-pixel masks for a segmenter."""
    if annotations(model) == "boxes":
        from advlab.data.boxes import load_voc_boxes

        return load_voc_boxes(spec, arg, model, n)
    from advlab.data.masks import load_voc

    _need(spec, model, "masks", "holds per-pixel masks for segmentation models; {name} is not a segmenter")
    return load_voc(spec, arg, model, n)


@image_source("coco", usage="coco:ROOT[:SPLIT]", argument=_given)
def _coco_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """COCO through torchvision's CocoDetection: boxes for a detector."""
    from advlab.data.boxes import load_coco

    _need(spec, model, "boxes", "holds boxes for detectors; {name} is not a detector (--task detection)")
    return load_coco(spec, arg, model, n)


@image_source("cifar10", usage="cifar10:DIR[:train|test]", argument=_given)
def _cifar10_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """CIFAR-10 through torchvision in DIR (downloaded there where absent; the test split by default)."""
    from advlab.data.benchmarks import load_cifar

    return load_cifar(spec, "cifar10", arg, model, n)


@image_source("cifar100", usage="cifar100:DIR[:train|test]", argument=_given)
def _cifar100_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """CIFAR-100 through torchvision in DIR (downloaded there where absent; the test split by default)."""
    from advlab.data.benchmarks import load_cifar

    return load_cifar(spec, "cifar100", arg, model, n)


@image_source("robustbench-imagenet", usage="robustbench-imagenet:DIR", argument=_given)
def _robustbench_imagenet_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """RobustBench's 5,000-image ImageNet evaluation subset from DIR/val/<wnid>/ (needs robustbench)."""
    from advlab.data.benchmarks import load_robustbench_imagenet

    return load_robustbench_imagenet(spec, arg, model, n)


def _need(spec: str, model: nn.Module, kind: str, problem: str) -> None:
    if annotations(model) != kind:
        raise AdvlabError(f"{spec} " + problem.format(name=model.name))


# ---------------------------------------------------------------- sources
def _imagenet_samples(spec: str, model: nn.Module, n: int | None) -> ImageSet:
    if model.num_classes != 1000:
        raise AdvlabError(f"imagenet-samples are labeled in ImageNet's 1000 classes; the model has "
                          f"{model.num_classes}; use a 1000-class ImageNet model, or --data in the model's classes "
                          "(cifar10:DIR, cifar100:DIR, folder:PATH, tensors:FILE)")
    data_dir = package_dir("foolbox")
    paths = sorted((data_dir / "data").glob("imagenet_*.jpg")) if data_dir else []
    found = [(m, p) for p in paths if (m := _SAMPLE.fullmatch(p.name))]
    if not found:
        raise AdvlabError("foolbox's ImageNet samples (foolbox/data/imagenet_*.jpg) were not found; "
                          "reinstall foolbox (pip install foolbox==3.3.4)")
    found.sort(key=lambda mp: int(mp[0].group(1)))
    found = first_n(found, n, spec)
    x = decode_files([p for _, p in found], model)
    y = torch.tensor([int(m.group(2)) for m, _ in found], dtype=torch.int64)
    return ImageSet(x, y, [p.name for _, p in found], spec, "ground-truth")


def _folder(spec: str, root: Path, model: nn.Module, n: int | None) -> ImageSet:
    if not root.is_dir():
        raise AdvlabError(f"{spec}: directory {root} does not exist; check the path")
    loose = [p.name for p in root.iterdir() if is_image(p)]
    if loose:
        raise AdvlabError(f"{spec}: {len(loose)} images lie directly in {root} (e.g. {min(loose)}); "
                          "put them in one subfolder per class (PATH/<class>/image.jpg)")
    files: list[Path] = []
    labels: list[int] = []
    for sub in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        images = sorted(p for p in sub.rglob("*") if is_image(p))
        if images:
            label = _class_index(sub.name, model, spec)
            files += images
            labels += [label] * len(images)
    if not files:
        raise AdvlabError(f"{spec}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in class subfolders of "
                          f"{root}; use the layout PATH/<class>/image.jpg")
    files = first_n(files, n, spec)
    x = decode_files(files, model)
    names = [p.relative_to(root).as_posix() for p in files]
    return ImageSet(x, torch.tensor(labels[:len(files)], dtype=torch.int64), names, spec, "ground-truth")


def _photos(spec: str, model: nn.Module, n: int | None) -> ImageSet:
    files = sorted(p for package, rel in PHOTO_FILES if (d := package_dir(package)) and (p := d / rel).is_file())
    if not files:
        raise AdvlabError("photos: no sample photos found; pip install scikit-image scikit-learn "
                          "(or matplotlib), or use imagenet-samples / folder:PATH")
    files = first_n(files, n, spec)
    unknown = torch.full((len(files),), -1, dtype=torch.int64)  # the task takes the clean prediction as reference
    return ImageSet(decode_files(files, model), unknown, [p.name for p in files], spec, "prediction")


# ---------------------------------------------------------------- helpers shared by the sources
def _class_index(folder: str, model: nn.Module, spec: str) -> int:
    """Subfolder name -> class index: class name (case-insensitive, '_' == ' '), integer index, or wnid."""
    key = folder.lower().replace("_", " ")
    hits = [i for i, c in enumerate(model.class_names) if c.lower().replace("_", " ") == key]
    if len(hits) > 1:
        raise AdvlabError(f"{spec}: subfolder {folder!r} matches classes {hits} by name; rename it to the "
                          "integer class index")
    if hits:
        return hits[0]
    k = model.num_classes
    if folder.isdigit():
        if int(folder) >= k:
            raise AdvlabError(f"{spec}: subfolder {folder!r} is class index {int(folder)} but the model has "
                              f"{k} classes (0..{k - 1}); rename the folder")
        return int(folder)
    if _WNID.fullmatch(folder) and k == 1000:
        wnids = _imagenet_wnids()
        if folder in wnids:
            return wnids[folder]
    named = "" if model.named_classes else (" (the model has no class names: pass --class-names FILE, one name "
                                            "per line in class-index order, to use class-named folders)")
    raise AdvlabError(f"{spec}: subfolder {folder!r} maps to no class of the model{named}; name class folders by "
                      f"index (0..{k - 1}), class name (e.g. {model.class_names[0]!r}) or, for 1000-class "
                      "ImageNet models, WordNet id (e.g. n01440764)")


@functools.lru_cache(maxsize=1)
def _imagenet_wnids() -> dict[str, int]:
    """ImageNet-1k WordNet ids -> class index (index order = sorted wnids)."""
    lines = (Path(__file__).with_name("imagenet_wnids.txt")).read_text(encoding="ascii").split()
    return {w: i for i, w in enumerate(lines)}




MEMORY = "memory"  # the scheme of images a Python caller passed as objects (`advlab.data.memory`)


@image_source(MEMORY, usage="memory:KIND", argument=_given, python_only=True)
def _memory_source(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """A run on images a Python caller held (`advlab.data.memory`): they cannot be read again from a name."""
    raise AdvlabError(f"--data {spec}: this run's images were Python objects; continue it from Python with "
                      "advlab.evaluate(model, data, out=RUN_DIR) on the same objects")
