"""Image files decoded for a model: RGB or grayscale, 8 bits per channel, torchvision's ImageNet eval
geometry (resize the shorter side, center crop), streamed in DataLoader workers where the model has an
input size; and a note when files are enlarged far beyond their own size."""
from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

from advlab.core.errors import AdvlabError
from advlab.core.images import FileImages, Images, as_images
from advlab.data.image_set import IMAGE_SUFFIXES

CROP_FRACTION = 0.875  # torchvision's ImageNet convention: resize 256, center-crop 224


ENLARGED = 4  # image files enlarged more than this many times for the model's input are noted


GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L"})  # PIL modes of one-channel images


def file_notes(files: list[Path], size: int, channels: int, spec: str) -> list[str]:
    """What decoding the files for the model changes on the user's behalf, one note each (their
    headers are read, not the pixels): files enlarged more than `ENLARGED`x to its input (a 1x1 image
    attacked at 224 px says little about the model), and grayscale files repeated into its 3 channels."""
    smallest, count, gray = None, 0, []
    for path in files:
        try:
            with Image.open(path) as im:
                width, height = im.size
                mode = im.mode
        except (OSError, ValueError):  # an unreadable file is named when it is decoded
            continue
        if min(width, height) * ENLARGED < size / CROP_FRACTION:
            count += 1
            smallest = min(smallest or (min(width, height), path.name, width, height),
                           (min(width, height), path.name, width, height))
        if channels == 3 and mode in GRAY_MODES:
            gray.append(path.name)
    notes = []
    if smallest is not None:
        _, name, width, height = smallest
        notes.append(f"{count} of {len(files)} images of {spec} are enlarged more than {ENLARGED}x to the model's "
                     f"{size} px input (the smallest, {name}, is {width}x{height}); check --data, or --input-size for "
                     "the model")
    if gray:
        notes.append(f"{len(gray)} of {len(files)} images of {spec} are grayscale (e.g. {gray[0]}) and are repeated "
                     "into the model's 3 channels")
    return notes


def channel_notes(channels: int, want: int, spec: str) -> list[str]:
    """The note for one-channel images repeated into a 3-channel model's input (tensors, Fashion-MNIST)."""
    return [f"the 1-channel images of {spec} are repeated into the model's 3 channels"] if (channels, want) == (1, 3) \
        else []


def package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it (where wheels keep sample images and lists)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()


def load_image_file(path: str | Path, model: nn.Module) -> torch.Tensor:  # -> (C, H, W) float32
    """One image file, decoded and shaped like the files of a data source (e.g. a starting image)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise AdvlabError(f"image file {p} does not exist; check the path")
    return decode_files([p], model)[0]


def decode_files(files: list[Path], model: nn.Module) -> Images:  # (N, C, H, W) float32
    """Image files for the model: RGB/L, resized + center-cropped to its input size. With an input size
    they are decoded on demand (streamed, in DataLoader workers); without one they are decoded now,
    and must share one size."""
    if model.in_channels not in (1, 3):
        raise AdvlabError(f"image files are RGB or grayscale but the model wants {model.in_channels} channels; "
                          "use tensors:FILE")
    mode = "RGB" if model.in_channels == 3 else "L"
    transform = getattr(model, "image_transform", None)
    if model.input_size is not None:
        decoder = functools.partial(decode_with, mode=mode, transform=transform) if transform is not None else \
            functools.partial(decode_for_model, mode=mode, size=model.input_size)
        return FileImages(files, (model.in_channels, model.input_size, model.input_size), decoder)
    images = [decode(p, mode) for p in files]  # each (C, H, W) uint8
    sizes = sorted({tuple(im.shape[-2:]) for im in images})
    if len(sizes) > 1:
        raise AdvlabError(f"images differ in size ({sizes[0]} vs {sizes[-1]}) and the model has no input size; "
                          "set --input-size, or give same-size images")
    return as_images(torch.stack(images).to(torch.float32).div_(255.0))


def decode_for_model(path: Path, mode: str, size: int) -> torch.Tensor:  # -> (C, size, size) float32
    return _geometry(decode(path, mode), size).to(torch.float32).div_(255.0)


def decode_with(path: Path, mode: str, transform: Callable[[Image.Image], torch.Tensor]) -> torch.Tensor:
    """An image file through a model's own eval transform (e.g. timm's): PIL image in `mode` -> (C, H, W)
    float32 in [0, 1]."""
    try:
        with Image.open(path) as im:
            image = im.convert(mode)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise AdvlabError(f"cannot read image {path}: {type(exc).__name__}: {exc}; delete or replace it") from exc
    return transform(image).to(torch.float32)


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
