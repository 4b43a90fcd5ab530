"""Image sources with per-pixel masks, for segmentation models:

- `pairs:DIR`: DIR/images/<stem>.<jpg|png|...> and DIR/masks/<stem>.png with matching stems; masks
  are single-channel PNGs of class ids (mode L) or palette PNGs (mode P, the index is the class, as
  in PASCAL VOC); 255 = void.
- `voc:ROOT`: PASCAL VOC segmentation through `torchvision.datasets.VOCSegmentation` from a local
  root (ROOT/VOCdevkit/VOC<year>/...), `voc:ROOT` = 2012 val, `voc:ROOT:2007:test` for another
  year and split. It never downloads: a missing root is an error that says where to put it.

Images of one size are kept as they are; images of different sizes need `--input-size S`: the
shorter side is resized to S (bilinear for images, nearest for masks) and the centre S x S kept.
The images are decoded on demand (`FileImages`, in DataLoader workers), so a set of any size
streams; the masks are read once and kept compact, one byte per pixel (`label_dtype`).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image
from torch import nn

from advlab.core.criteria import IGNORE, label_dtype
from advlab.core.errors import AdvlabError, first_line
from advlab.core.images import FileImages, Images
from advlab.data.files import decode
from advlab.data.image_set import IMAGE_SUFFIXES, ImageSet, first_n

VOC_YEARS = ("2007", "2008", "2009", "2010", "2011", "2012")
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")


def load_pairs(spec: str, root: Path, model: nn.Module, n: int | None) -> ImageSet:

    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise AdvlabError(f"{spec}: expected {images} and {masks}; put images and their masks (same file stem) there")
    by_stem = {p.stem: p for p in sorted(masks.iterdir()) if p.suffix.lower() == ".png"}
    files = [p for p in sorted(images.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    missing = [p.name for p in files if p.stem not in by_stem]
    if missing:
        raise AdvlabError(f"{spec}: {len(missing)} images have no mask in {masks} (e.g. {missing[0]}); give each "
                          "image a mask PNG with the same stem")
    if not files:
        raise AdvlabError(f"{spec}: no images in {images}")
    files = first_n(files, n, spec)
    x, y = _decode_pairs([(p, by_stem[p.stem]) for p in files], model, spec)
    return ImageSet(x, y, [p.name for p in files], spec, "ground-truth")


def load_voc(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    """PASCAL VOC segmentation (Everingham et al., IJCV 2010) from a local root; never downloads."""
    from torchvision.datasets import VOCSegmentation

    root, year, split = voc_parts(spec, arg, "2012", "val")
    try:
        dataset = VOCSegmentation(str(Path(root).expanduser()), year=year, image_set=split, download=False)
    except (RuntimeError, ValueError, OSError) as exc:
        raise AdvlabError(f"{spec}: no VOC{year} {split} segmentation set under {root} ({first_line(exc)}); "
                          f"extract VOCtrainval into {root} (it holds VOCdevkit/VOC{year}/), or download it once "
                          "with torchvision.datasets.VOCSegmentation(download=True)") from None
    if model.num_classes != len(VOC_CLASSES):
        raise AdvlabError(f"{spec} is labeled in the {len(VOC_CLASSES)} VOC classes; the model has "
                          f"{model.num_classes}")
    pairs = first_n(list(zip(dataset.images, dataset.masks)), n, spec)
    x, y = _decode_pairs([(Path(i), Path(m)) for i, m in pairs], model, spec)
    return ImageSet(x, y, [Path(i).name for i, _ in pairs], spec, "ground-truth", VOC_CLASSES)


def voc_parts(spec: str, arg: str, year: str, split: str) -> tuple[str, str, str]:
    """'ROOT[:YEAR[:SPLIT]]' -> (ROOT, YEAR, SPLIT), the given defaults for what is left out."""
    root, _, rest = arg.partition(":")
    given_year, _, given_split = rest.partition(":")
    year, split = given_year or year, given_split or split
    if year not in VOC_YEARS:
        raise AdvlabError(f"{spec}: year {year!r} is not a VOC year; use one of {', '.join(VOC_YEARS)}")
    return root, year, split


def _decode_pairs(pairs: list[tuple[Path, Path]], model: nn.Module, spec: str) -> tuple[Images, torch.Tensor]:
    """(N, C, H, W) float images in [0, 1], decoded on demand, and (N, H, W) masks (uint8 where the
    class ids fit), one geometry for both: the masks are read now, the images' sizes from their headers."""
    mode = "RGB" if model.in_channels == 3 else "L"
    masks = []
    for image_path, mask_path in pairs:
        mask, size = _read_mask(mask_path, spec), _image_size(image_path, spec)  # (H, W), (H, W)
        if size != tuple(mask.shape):
            raise AdvlabError(f"{spec}: mask {mask_path.name} is {tuple(mask.shape)} but its image is "
                              f"{size}; give each image a mask of its size")
        masks.append(mask)
    sizes = {tuple(m.shape) for m in masks}
    size = model.input_size
    resize = len(sizes) > 1 or size is not None
    if resize:
        if size is None:
            raise AdvlabError(f"{spec}: images differ in size ({min(sizes)} vs {max(sizes)}); set --input-size S to "
                              "resize their shorter side to S and keep the centre S x S")
        masks = [_resize_crop(m[None], size, TF.InterpolationMode.NEAREST)[0] for m in masks]
    dtype = torch.int64 if any(m.dtype == torch.int64 for m in masks) else torch.uint8
    stacked = torch.stack([m.to(dtype) for m in masks])  # (N, H, W)
    images = FileImages([image for image, _ in pairs], (model.in_channels, *stacked.shape[-2:]),
                        functools.partial(_decode_image, mode=mode, size=size if resize else None))
    return images, stacked


def _decode_image(path: Path, mode: str, size: int | None) -> torch.Tensor:  # -> (C, H, W) float32
    image = decode(path, mode)  # (C, H, W) uint8
    if size is not None:
        image = _resize_crop(image, size, TF.InterpolationMode.BILINEAR)
    return image.float().div_(255.0)


def _image_size(path: Path, spec: str) -> tuple[int, int]:
    """(H, W) of an image file, from its header."""
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError) as exc:
        raise AdvlabError(f"{spec}: cannot read image {path}: {first_line(exc)}; delete or replace it") from exc
    return height, width


def _read_mask(path: Path, spec: str) -> torch.Tensor:
    """(H, W) class ids of a mask PNG: uint8 where they fit (`label_dtype`), else int64."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I", "I;16"):
                raise AdvlabError(f"{spec}: mask {path.name} is a {im.mode} image; masks must hold one class id per "
                                  "pixel (a grayscale or palette PNG)")
            arr = np.array(im)
    except (OSError, ValueError) as exc:
        raise AdvlabError(f"{spec}: cannot read mask {path}: {first_line(exc)}; replace it") from exc
    wide = torch.from_numpy(arr.astype(np.int64))
    fits = wide.numel() == 0 or (int(wide.min()) >= 0 and int(wide.max()) <= IGNORE)
    return wide.to(label_dtype(IGNORE)) if fits else wide


def _resize_crop(img: torch.Tensor, size: int, mode: TF.InterpolationMode) -> torch.Tensor:
    """(C, H, W): shorter side to `size`, centre `size` x `size`."""
    img = TF.resize(img, [size], interpolation=mode, antialias=mode != TF.InterpolationMode.NEAREST)
    return TF.center_crop(img, [size, size])
