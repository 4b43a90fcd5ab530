"""Image sources for attacks: foolbox's ImageNet samples, class folders, tensor files, offline photos.

`load_images(spec, model)` returns an `ImageSet` of [0, 1] float32 CPU images in the model's channel
count and (for files) its input size, with labels in the model's class indices.
"""
from __future__ import annotations

import functools
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from advlab.errors import AdvlabError, first_line
from advlab.evaluate import predict
from advlab.models import ImageClassifier

T = TypeVar("T")
SCHEMES = ("imagenet-samples, photos, fashion-mnist[:train|test], fashion-scenes[:train|test], folder:PATH, "
           "tensors:FILE, pairs:DIR, voc:ROOT[:YEAR[:SPLIT]]")
SCENES_DEFAULT_N = {"train": 4000, "test": 1000}  # fashion-scenes without -n
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
# Where Fashion-MNIST's idx files may already be: Debian's dataset-fashion-mnist, then advlab's cache.
FASHION_DIRS = (Path("/usr/share/datasets/fashion-mnist"), Path.home() / ".cache" / "advlab" / "FashionMNIST" / "raw")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
CROP_FRACTION = 0.875  # torchvision's ImageNet convention: resize 256, center-crop 224
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
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1], CPU
    y: torch.Tensor  # (N,) int64 class index in the model's classes, -1 = unknown; segmentation: (N, H, W), 255 = void
    names: list[str]  # one per image: file name (relative path for folders), or "FILE[i]" for tensors
    source: str  # the spec string given, e.g. "imagenet-samples", "folder:/data/val"
    label_source: str  # "ground-truth" | "prediction" | "none"
    class_names: tuple[str, ...] | None = None  # the source's own class names, where it knows them

    def __len__(self) -> int:
        return int(self.x.shape[0])


def load_images(spec: str, model: ImageClassifier, *, n: int | None = None) -> ImageSet:
    """Load the first `n` (default: all) images of `spec` in deterministic order, labeled for `model`."""
    if n is not None and n <= 0:
        raise AdvlabError(f"-n must be a positive number of images, got {n}")
    scheme, sep, arg = spec.partition(":")
    if spec == "imagenet-samples":
        return _imagenet_samples(spec, model, n)
    if spec == "photos":
        return _photos(spec, model, n)
    if scheme == "fashion-mnist" and arg in ("", "train", "test") and (sep or spec == "fashion-mnist"):
        return _fashion_mnist(spec, arg or "test", model, n)
    if scheme == "fashion-scenes" and arg in ("", "train", "test") and (sep or spec == "fashion-scenes"):
        return _fashion_scenes(spec, arg or "test", model, n)
    if sep and arg and scheme == "folder":
        return _folder(spec, Path(arg).expanduser(), model, n)
    if sep and arg and scheme == "tensors":
        return _tensors(spec, arg, model, n)
    if sep and arg and scheme in ("pairs", "voc"):
        from advlab.data_masks import load_pairs, load_voc

        if getattr(model, "task", "classification") != "segmentation":
            raise AdvlabError(f"{spec} holds per-pixel masks for segmentation models; {model.name} is a classifier")
        if scheme == "pairs":
            return load_pairs(spec, Path(arg).expanduser(), model, n)
        return load_voc(spec, arg, model, n)
    hint = f" (did you mean folder:{spec}?)" if Path(spec).is_dir() else ""
    raise AdvlabError(f"unknown image source {spec!r}{hint}; use one of: {SCHEMES}")


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
    found = _first_n(found, n, spec)
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
    files = _first_n(files, n, spec)
    x = _decode_files(files, model)
    names = [p.relative_to(root).as_posix() for p in files]
    return ImageSet(x, torch.tensor(labels[:len(files)], dtype=torch.int64), names, spec, "ground-truth")


def _tensors(spec: str, file: str, model: ImageClassifier, n: int | None) -> ImageSet:
    x_raw, y_raw = _read_tensor_file(Path(file).expanduser(), spec)
    x = _to_nchw_view(x_raw, spec)  # (N, C, H, W), dtype as stored
    if len(x) == 0:
        raise AdvlabError(f"{spec}: x holds no images; save at least one")
    y = _check_labels(y_raw, len(x), model, spec)
    keep = _first_n(list(range(len(x))), n, spec)
    x = _match_tensor_channels(_to_unit_float(x[:len(keep)], spec), model, spec)
    names = [f"{file}[{i}]" for i in keep]
    if y is None or (y.dim() == 1 and bool((y == -1).all())):
        return ImageSet(x, torch.full((len(x),), -1, dtype=torch.int64), names, spec, "none")
    return ImageSet(x, y[:len(x)].clone(), names, spec, "ground-truth")


def _photos(spec: str, model: ImageClassifier, n: int | None) -> ImageSet:
    files = sorted(p for package, rel in PHOTO_FILES if (d := _package_dir(package)) and (p := d / rel).is_file())
    if not files:
        raise AdvlabError("photos: no sample photos found; pip install scikit-image scikit-learn "
                          "(or matplotlib), or use imagenet-samples / folder:PATH")
    files = _first_n(files, n, spec)
    x = _decode_files(files, model)
    if getattr(model, "task", "classification") != "classification":  # the task takes the clean prediction
        return ImageSet(x, torch.full((len(x),), -1, dtype=torch.int64), [p.name for p in files], spec, "prediction")
    device = next(model.buffers()).device  # mean/std live where the model does
    labels = predict(model, x, 64, device).label
    return ImageSet(x, labels, [p.name for p in files], spec, "prediction")


# ---------------------------------------------------------------- helpers
def _fashion_mnist(spec: str, split: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """Fashion-MNIST (Xiao et al., 2017): 60k train / 10k test 28x28 grayscale images, 10 classes."""
    if model.num_classes != 10:
        raise AdvlabError(f"{spec} is labeled in 10 classes; the model has {model.num_classes}")
    images, labels = _fashion_arrays(split)
    count = len(_first_n(range(images.shape[0]), n, spec))
    x = torch.from_numpy(images[:count].copy()).unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28)
    x = _match_tensor_channels(x, model, spec)
    names = [f"{split}[{i}]" for i in range(count)]
    return ImageSet(x, torch.from_numpy(labels[:count].astype(np.int64)), names, spec, "ground-truth",
                    FASHION_CLASSES)


def _fashion_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's (N, 28, 28) uint8 images and (N,) uint8 labels of a split."""
    prefix = "train" if split == "train" else "t10k"
    folder = next((d for d in FASHION_DIRS if (d / f"{prefix}-images-idx3-ubyte.gz").is_file()), None)
    if folder is None:
        folder = _download_fashion_mnist()
    return _read_idx(folder / f"{prefix}-images-idx3-ubyte.gz"), _read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz")


def _fashion_scenes(spec: str, split: str, model: ImageClassifier, n: int | None) -> ImageSet:
    """fashion-scenes (advlab.scenes): RGB canvases of real Fashion-MNIST garments with per-pixel masks."""
    from advlab.scenes import SCENE_CLASSES, compose

    if model.num_classes != len(SCENE_CLASSES) or model.in_channels != 3:
        raise AdvlabError(f"{spec} is RGB and labeled per pixel in {len(SCENE_CLASSES)} classes (background and "
                          f"10 garments); the model takes {model.in_channels} channels and has {model.num_classes} "
                          "classes; use --model advlab.segnet:fashion_segnet or --task segmentation")
    images, labels = _fashion_arrays(split)
    count = n or SCENES_DEFAULT_N[split]
    garments = torch.from_numpy(images.copy()).float().div_(255.0)  # (M, 28, 28)
    scenes = compose(garments, torch.from_numpy(labels.astype(np.int64)), count, split=split)
    names = [f"{split}-scene[{i}]" for i in range(count)]
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


def _package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def _first_n(items: list[T], n: int | None, spec: str) -> list[T]:
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


def _decode_files(files: list[Path], model: ImageClassifier) -> torch.Tensor:  # -> (N, C, H, W) float32
    """Decode with PIL, convert to RGB/L for the model, resize + center-crop to its input size, stack."""
    if model.in_channels not in (1, 3):
        raise AdvlabError(f"image files are RGB or grayscale but the model wants {model.in_channels} channels; "
                          "use tensors:FILE")
    mode = "RGB" if model.in_channels == 3 else "L"
    images = [_geometry(_decode(p, mode), model.input_size) for p in files]  # each (C, H, W) uint8
    sizes = sorted({tuple(im.shape[-2:]) for im in images})
    if len(sizes) > 1:
        raise AdvlabError(f"images differ in size ({sizes[0]} vs {sizes[-1]}) and the model has no input size; "
                          "set --input-size, or give same-size images")
    return torch.stack(images).to(torch.float32).div_(255.0)


def _decode(path: Path, mode: str) -> torch.Tensor:  # -> (C, H, W) uint8
    try:
        with Image.open(path) as im:
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


def _read_tensor_file(path: Path, spec: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x, y or None) from a .npz or .pt file holding keys 'x' and optional 'y'."""
    if not path.is_file():
        raise AdvlabError(f"{spec}: file {path} does not exist; check the path")
    suffix = path.suffix.lower()
    if suffix not in (".npz", ".pt", ".pth"):
        raise AdvlabError(f"{spec}: unsupported file type {suffix!r}; save x (and y) with np.savez or torch.save "
                          "as .npz or .pt")
    try:
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AdvlabError(f"{spec}: cannot read {path}: {type(exc).__name__}: {first_line(exc)}; "
                          "save a dict {'x': images, 'y': labels} with np.savez or torch.save") from exc
    if not isinstance(data, dict) or "x" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise AdvlabError(f"{spec}: {path} has no 'x' (found {keys}); save a dict {{'x': images, 'y': labels}}")
    y = data.get("y")
    return _as_tensor(data["x"], "x", spec), None if y is None else _as_tensor(y, "y", spec)


def _as_tensor(value: object, key: str, spec: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise AdvlabError(f"{spec}: {key} has numpy dtype {value.dtype}; save numeric arrays")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value
    raise AdvlabError(f"{spec}: {key} is a {type(value).__name__}; save it as a numpy array or torch tensor")


def _to_nchw_view(x: torch.Tensor, spec: str) -> torch.Tensor:  # -> (N, C, H, W), no copy
    shape = tuple(x.shape)
    if x.dim() == 3 and shape[-1] not in (1, 3):
        return x.unsqueeze(1)
    if x.dim() == 4 and shape[1] in (1, 3):
        return x
    if x.dim() == 4 and shape[3] in (1, 3):
        return x.permute(0, 3, 1, 2)
    raise AdvlabError(f"{spec}: x has shape {shape}; accepted layouts: (N, C, H, W) or (N, H, W, C) with "
                      "C in {1, 3}, or (N, H, W) grayscale (add a batch axis to a single image)")


def _to_unit_float(x: torch.Tensor, spec: str) -> torch.Tensor:  # uint8 | float -> float32 in [0, 1]
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0).contiguous()
    if not x.is_floating_point():
        raise AdvlabError(f"{spec}: x has dtype {x.dtype}; give float values in [0, 1] or uint8 in [0, 255]")
    x = x.to(torch.float32).contiguous()
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
        raise AdvlabError(f"{spec}: x values span [{float(x.min()):g}, {float(x.max()):g}] but float images must "
                          "lie in [0, 1]; divide by 255 (or save uint8)")
    return x


def _match_tensor_channels(x: torch.Tensor, model: ImageClassifier, spec: str) -> torch.Tensor:
    c, want = int(x.shape[1]), model.in_channels
    if c == want:
        return x
    if c == 1 and want == 3:
        return x.repeat(1, 3, 1, 1)
    raise AdvlabError(f"{spec}: x has {c} channels but the model wants {want}; convert the images to "
                      f"{want} channel(s) before saving")


def _check_labels(y: torch.Tensor | None, count: int, model: ImageClassifier, spec: str) -> torch.Tensor | None:
    """Class labels (N,) for a classifier, -1 = unknown; per-pixel masks (N, H, W) for a segmenter,
    255 = void (their size and class ids are checked against the images by the segmentation task)."""
    if y is None:
        return None
    if getattr(model, "task", "classification") == "segmentation":
        if y.dim() != 3 or y.is_floating_point() or y.dtype == torch.bool:
            raise AdvlabError(f"{spec}: y has shape {tuple(y.shape)} dtype {y.dtype}; a segmentation model needs "
                              "integer masks (N, H, W), one class id per pixel (255 = void)")
        if len(y) != count:
            raise AdvlabError(f"{spec}: y has {len(y)} masks for {count} images; give one mask per image")
        return y.to(torch.int64)
    if y.dim() != 1 or y.is_floating_point() or y.dtype == torch.bool:
        raise AdvlabError(f"{spec}: y has shape {tuple(y.shape)} dtype {y.dtype}; give a 1-D integer array of "
                          "class indices (-1 = unknown)")
    if len(y) != count:
        raise AdvlabError(f"{spec}: y has {len(y)} labels for {count} images; give one label per image")
    y = y.to(torch.int64)
    if int(y.min()) < -1 or int(y.max()) >= model.num_classes:
        raise AdvlabError(f"{spec}: y spans [{int(y.min())}, {int(y.max())}] but the model has "
                          f"{model.num_classes} classes; use 0..{model.num_classes - 1} (-1 = unknown)")
    return y
