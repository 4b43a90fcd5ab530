"""Image sources for attacks: `load_images(spec, model)` dispatches on the spec and returns an
`ImageSet` of [0, 1] float32 CPU images in the model's channel count and (for files) its input size,
with labels in the model's class indices (or per-pixel masks for segmenters).

Here: foolbox's ImageNet samples, class folders, offline photos, and the decoding helpers the
sources share. Elsewhere: `data_fashion` (fashion-mnist, fashion-scenes), `data_tensors`
(tensors:FILE), `data_masks` (pairs:DIR, voc:ROOT).
"""
from __future__ import annotations

import functools
import logging
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from advlab.catalog import Catalog
from advlab.errors import AdvlabError
from advlab.evaluate import predict
from advlab.images import FileImages, Images, as_images
from advlab.models import ImageClassifier

T = TypeVar("T")
log = logging.getLogger("advlab")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
CROP_FRACTION = 0.875  # torchvision's ImageNet convention: resize 256, center-crop 224
ENLARGED = 4  # image files enlarged more than this many times for the model's input are noted
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


@dataclass
class ImageSet:
    images: Images  # (N, C, H, W) float32 in [0, 1], CPU, read on demand (a tensor given here is wrapped)
    y: torch.Tensor  # (N,) int64 class index in the model's classes, -1 = unknown; segmentation: (N, H, W), 255 = void
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


# Image sources by scheme, the part of the spec before the first ':' ("folder:PATH" -> "folder").
DATA = Catalog("data", group="advlab.data", builtin=(), noun="image source")
Source = Callable[[str, str, ImageClassifier, "int | None"], ImageSet]  # (spec, argument, model, n) -> images


def image_source(scheme: str, *, usage: str, argument: Callable[[str | None], bool]) -> Callable[[Source], Source]:
    """Decorator: register a loader `(spec, argument, model, n) -> ImageSet` for `scheme`; `argument`
    says which arguments it takes (None: the spec has no ':')."""

    def wrap(load: Source) -> Source:
        DATA.add(scheme, load, usage=usage, argument=argument)
        return load

    return wrap


def schemes() -> str:
    """What `--data` takes, in the order the sources were registered."""
    return ", ".join(e.meta["usage"] for e in DATA.in_order())


def load_images(spec: str, model: ImageClassifier, *, n: int | None = None) -> ImageSet:
    """Load the first `n` (default: all) images of `spec` in deterministic order, labeled for `model`."""
    if n is not None and n <= 0:
        raise AdvlabError(f"-n must be a positive number of images, got {n}")
    scheme, sep, arg = spec.partition(":")
    if scheme not in DATA or not DATA.get(scheme).meta["argument"](arg if sep else None):
        hint = f" (did you mean folder:{spec}?)" if Path(spec).is_dir() else ""
        raise AdvlabError(f"unknown image source {spec!r}{hint}; use one of: {schemes()}")
    data = DATA.get(scheme).obj(spec, arg, model, n)
    if isinstance(data.images, FileImages) and model.input_size is not None:
        data.notes += enlarged(data.images.files, model.input_size, spec)
    for note in data.notes:
        log.warning(note)
    return data


def enlarged(files: list[Path], size: int, spec: str) -> list[str]:
    """A note when image files are enlarged more than `ENLARGED`x on their way to the model's input
    (a 1x1 image attacked at 224 px says little about the model): their headers are read, not the pixels."""
    smallest, count = None, 0
    for path in files:
        try:
            with Image.open(path) as im:
                width, height = im.size
        except (OSError, ValueError):  # an unreadable file is named when it is decoded
            continue
        if min(width, height) * ENLARGED < size / CROP_FRACTION:
            count += 1
            smallest = min(smallest or (min(width, height), path.name, width, height),
                           (min(width, height), path.name, width, height))
    if smallest is None:
        return []
    _, name, width, height = smallest
    return [f"{count} of {len(files)} images of {spec} are enlarged more than {ENLARGED}x to the model's {size} px "
            f"input (the smallest, {name}, is {width}x{height}); check --data, or --input-size for the model"]


def _none(arg: str | None) -> bool:
    return arg is None


def _split(arg: str | None) -> bool:
    return arg in (None, "", "train", "test")


def _given(arg: str | None) -> bool:
    return bool(arg)


@image_source("imagenet-samples", usage="imagenet-samples", argument=_none)
def _imagenet_samples_source(spec: str, arg: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """foolbox's 20 ImageNet validation photos, with their labels (offline)."""
    return _imagenet_samples(spec, model, n)


@image_source("photos", usage="photos", argument=_none)
def _photos_source(spec: str, arg: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """Real photos shipped inside installed wheels, labeled by the model's clean prediction (offline)."""
    return _photos(spec, model, n)


@image_source("fashion-mnist", usage="fashion-mnist[:train|test]", argument=_split)
def _fashion_mnist(spec: str, arg: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """Fashion-MNIST (Debian's dataset-fashion-mnist, or torchvision's download)."""
    from advlab.data_fashion import load_fashion_mnist

    return load_fashion_mnist(spec, arg or "test", model, n)


@image_source("fashion-scenes", usage="fashion-scenes[:train|test]", argument=_split)
def _fashion_scenes(spec: str, arg: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """Fashion-MNIST items on textured canvases, with masks and boxes (the lab's segmentation and detection data)."""
    from advlab.data_fashion import load_fashion_scenes

    return load_fashion_scenes(spec, arg or "test", model, n)


@image_source("folder", usage="folder:PATH", argument=_given)
def _folder_source(spec: str, arg: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """Image files in one subfolder per class (a class name, index or ImageNet WordNet id)."""
    return _folder(spec, Path(arg).expanduser(), model, n)


@image_source("tensors", usage="tensors:FILE", argument=_given)
def _tensors_source(spec: str, arg: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """An .npz or .pt file with `x` (N images) and optional `y`."""
    from advlab.data_tensors import load_tensors

    return load_tensors(spec, arg, model, n)


@image_source("pairs", usage="pairs:DIR", argument=_given)
def _pairs_source(spec: str, arg: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """Image and mask files side by side, for segmentation models."""
    from advlab.data_masks import load_pairs

    _need_task(spec, model, "segmentation", "holds per-pixel masks for segmentation models; {name} is a classifier")
    return load_pairs(spec, Path(arg).expanduser(), model, n)


@image_source("voc", usage="voc:ROOT[:YEAR[:SPLIT]]", argument=_given)
def _voc_source(spec: str, arg: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """PASCAL VOC through torchvision: boxes for a detector, per-pixel masks for a segmenter."""
    if getattr(model, "task", None) == "detection":
        from advlab.data_boxes import load_voc_boxes

        return load_voc_boxes(spec, arg, model, n)
    from advlab.data_masks import load_voc

    _need_task(spec, model, "segmentation", "holds per-pixel masks for segmentation models; {name} is a classifier")
    return load_voc(spec, arg, model, n)


@image_source("coco", usage="coco:ROOT[:SPLIT]", argument=_given)
def _coco_source(spec: str, arg: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """COCO through torchvision's CocoDetection: boxes for a detector."""
    from advlab.data_boxes import load_coco

    _need_task(spec, model, "detection", "holds boxes for detectors; {name} is not a detector (--task detection)")
    return load_coco(spec, arg, model, n)


def _need_task(spec: str, model: ImageClassifier, task: str, problem: str) -> None:
    if getattr(model, "task", "classification") != task:
        raise AdvlabError(f"{spec} " + problem.format(name=model.name))


# ---------------------------------------------------------------- sources
def _imagenet_samples(spec: str, model: ImageClassifier, n: int | None) -> ImageSet:
    if model.num_classes != 1000:
        raise AdvlabError(f"imagenet-samples are labeled in ImageNet's 1000 classes; the model has "
                          f"{model.num_classes}; use a 1000-class ImageNet model or folder:PATH / tensors:FILE")
    data_dir = _package_dir("foolbox")
    paths = sorted((data_dir / "data").glob("imagenet_*.jpg")) if data_dir else []
    found = [(m, p) for p in paths if (m := _SAMPLE.fullmatch(p.name))]
    if not found:
        raise AdvlabError("foolbox's ImageNet samples (foolbox/data/imagenet_*.jpg) were not found; "
                          "reinstall foolbox (pip install foolbox==3.3.4)")
    found.sort(key=lambda mp: int(mp[0].group(1)))
    found = first_n(found, n, spec)
    x = _decode_files([p for _, p in found], model)
    y = torch.tensor([int(m.group(2)) for m, _ in found], dtype=torch.int64)
    return ImageSet(x, y, [p.name for _, p in found], spec, "ground-truth")


def _folder(spec: str, root: Path, model: ImageClassifier, n: int | None) -> ImageSet:
    if not root.is_dir():
        raise AdvlabError(f"{spec}: directory {root} does not exist; check the path")
    loose = [p.name for p in root.iterdir() if _is_image(p)]
    if loose:
        raise AdvlabError(f"{spec}: {len(loose)} images lie directly in {root} (e.g. {min(loose)}); "
                          "put them in one subfolder per class (PATH/<class>/image.jpg)")
    files: list[Path] = []
    labels: list[int] = []
    for sub in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
        images = sorted(p for p in sub.rglob("*") if _is_image(p))
        if images:
            label = _class_index(sub.name, model, spec)
            files += images
            labels += [label] * len(images)
    if not files:
        raise AdvlabError(f"{spec}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in class subfolders of "
                          f"{root}; use the layout PATH/<class>/image.jpg")
    files = first_n(files, n, spec)
    x = _decode_files(files, model)
    names = [p.relative_to(root).as_posix() for p in files]
    return ImageSet(x, torch.tensor(labels[:len(files)], dtype=torch.int64), names, spec, "ground-truth")


def _photos(spec: str, model: ImageClassifier, n: int | None) -> ImageSet:
    files = sorted(p for package, rel in PHOTO_FILES if (d := _package_dir(package)) and (p := d / rel).is_file())
    if not files:
        raise AdvlabError("photos: no sample photos found; pip install scikit-image scikit-learn "
                          "(or matplotlib), or use imagenet-samples / folder:PATH")
    files = first_n(files, n, spec)
    x = _decode_files(files, model)
    if getattr(model, "task", "classification") != "classification":  # the task takes the clean prediction
        return ImageSet(x, torch.full((len(x),), -1, dtype=torch.int64), [p.name for p in files], spec, "prediction")
    device = next(model.buffers()).device  # mean/std live where the model does
    labels = predict(model, x, 64, device).label
    return ImageSet(x, labels, [p.name for p in files], spec, "prediction")


# ---------------------------------------------------------------- helpers shared by the sources
def _package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def first_n(items: list[T], n: int | None, spec: str) -> list[T]:
    if n is not None and n > len(items):
        raise AdvlabError(f"{spec} has {len(items)} images; lower -n to at most {len(items)}")
    return items[:n]


def _class_index(folder: str, model: ImageClassifier, spec: str) -> int:
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
    raise AdvlabError(f"{spec}: subfolder {folder!r} maps to no class of the model; name class folders by "
                      f"index (0..{k - 1}), class name (e.g. {model.class_names[0]!r}) or, for 1000-class "
                      "ImageNet models, WordNet id (e.g. n01440764)")


@functools.lru_cache(maxsize=1)
def _imagenet_wnids() -> dict[str, int]:
    """ImageNet-1k WordNet ids -> class index (index order = sorted wnids)."""
    lines = (Path(__file__).with_name("imagenet_wnids.txt")).read_text(encoding="ascii").split()
    return {w: i for i, w in enumerate(lines)}


def load_image_file(path: str | Path, model: ImageClassifier) -> torch.Tensor:  # -> (C, H, W) float32
    """One image file, decoded and shaped like the files of a data source (e.g. a starting image)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise AdvlabError(f"image file {p} does not exist; check the path")
    return _decode_files([p], model)[0]


def _decode_files(files: list[Path], model: ImageClassifier) -> Images:  # (N, C, H, W) float32
    """Image files for the model: RGB/L, resized + center-cropped to its input size. With an input size
    they are decoded on demand (streamed, in DataLoader workers); without one they are decoded now,
    and must share one size."""
    if model.in_channels not in (1, 3):
        raise AdvlabError(f"image files are RGB or grayscale but the model wants {model.in_channels} channels; "
                          "use tensors:FILE")
    mode = "RGB" if model.in_channels == 3 else "L"
    if model.input_size is not None:
        return FileImages(files, (model.in_channels, model.input_size, model.input_size),
                          functools.partial(decode_for_model, mode=mode, size=model.input_size))
    images = [decode(p, mode) for p in files]  # each (C, H, W) uint8
    sizes = sorted({tuple(im.shape[-2:]) for im in images})
    if len(sizes) > 1:
        raise AdvlabError(f"images differ in size ({sizes[0]} vs {sizes[-1]}) and the model has no input size; "
                          "set --input-size, or give same-size images")
    return as_images(torch.stack(images).to(torch.float32).div_(255.0))


def decode_for_model(path: Path, mode: str, size: int) -> torch.Tensor:  # -> (C, size, size) float32
    return _geometry(decode(path, mode), size).to(torch.float32).div_(255.0)


def decode(path: Path, mode: str) -> torch.Tensor:  # -> (C, H, W) uint8
    """An image file in `mode` ("L" or "RGB"), 8 bits per channel. 16-bit grayscale (PNG's I;16) is
    scaled to 8 bits (PIL's own convert would clip it to white); 32-bit integer or float images are
    refused rather than guessed."""
    try:
        with Image.open(path) as im:
            if im.mode.startswith("I;16") or im.mode == "I":
                wide = np.asarray(im).astype(np.int64)  # (H, W)
                if im.mode == "I" and (wide.min() < 0 or wide.max() > 65535):
                    raise AdvlabError(f"image {path} holds 32-bit integers ({wide.min()}..{wide.max()}); save it "
                                      "as an 8- or 16-bit image")
                im = Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")
            elif im.mode == "F":
                raise AdvlabError(f"image {path} holds 32-bit floats; save it as an 8- or 16-bit image, or pass "
                                  "the values in [0, 1] as tensors:FILE")
            arr = np.array(im.convert(mode))  # (H, W) or (H, W, 3) uint8
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AdvlabError(f"cannot read image {path}: {type(exc).__name__}: {exc}; delete or replace it") from exc
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


def _geometry(img: torch.Tensor, size: int | None) -> torch.Tensor:  # (C, H, W) -> (C, size, size)
    """torchvision's ImageNet eval geometry: shorter side to size/0.875, center crop; no-op at size x size."""
    if size is None or tuple(img.shape[-2:]) == (size, size):
        return img
    img = TF.resize(img, [round(size / CROP_FRACTION)], interpolation=TF.InterpolationMode.BILINEAR,
                    antialias=True)
    return TF.center_crop(img, [size, size])
