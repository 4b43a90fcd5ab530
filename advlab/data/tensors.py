"""`tensors:FILE`: images (and labels, masks or boxes) saved as arrays, `.npz` or `.pt` with `x` in
[0, 1] float or uint8, NCHW or NHWC, and optional `y`: class ids (N,) for classifiers (-1 = unknown),
masks (N, H, W) for segmenters (255 = void); for detectors `boxes` (N, G, 4) x1 y1 x2 y2 in pixels
with `box_labels` (N, G) (-1 = an empty slot). Files are read with `allow_pickle=False` /
`weights_only=True`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from advlab.core.errors import AdvlabError, first_line
from advlab.core.images import Images, StoredImages, as_images
from advlab.data.files import channel_notes
from advlab.data.image_set import ImageSet, annotations, first_n

RANGE_CHECK_BATCH = 256  # images per slice when float values are checked


def load_tensors(spec: str, file: str, model: nn.Module, n: int | None) -> ImageSet:
    x_raw, y_raw, data = _read_tensor_file(Path(file).expanduser(), spec)
    return tensor_set(x_raw, y_raw, data, model, n, spec, file)


def tensor_set(x_raw: torch.Tensor, y_raw: torch.Tensor | None, data: dict, model: nn.Module, n: int | None,
               spec: str, stem: str) -> ImageSet:
    """The ImageSet of images `x_raw` (as stored: NCHW or NHWC, uint8 or float) with labels `y_raw` and, for
    detectors, `data`'s boxes; image i is named STEM[i]."""
    x = _to_nchw_view(x_raw, spec)  # (N, C, H, W), dtype as stored
    if len(x) == 0:
        raise AdvlabError(f"{spec}: x holds no images; save at least one")
    y = check_labels(y_raw, len(x), model, spec)
    keep = first_n(list(range(len(x))), n, spec)
    notes = channel_notes(int(x.shape[1]), model.in_channels, spec)
    x = unit_images(x[:len(keep)], model, spec)
    names = [f"{stem}[{i}]" for i in keep]
    if annotations(model) == "boxes" and "boxes" in data:
        boxes = _boxes(data, len(x_raw), spec)[:len(x)]
        return ImageSet(x, torch.full((len(x),), -1, dtype=torch.int64), names, spec, "ground-truth", None, boxes,
                        notes)
    if y is None or (y.dim() == 1 and bool((y == -1).all())):
        return ImageSet(x, torch.full((len(x),), -1, dtype=torch.int64), names, spec, "none", notes=notes)
    return ImageSet(x, y[:len(x)].clone(), names, spec, "ground-truth", notes=notes)


def _boxes(data: dict, count: int, spec: str) -> list[dict[str, torch.Tensor]]:
    """Per image {boxes (G, 4), labels (G,)} from padded `boxes` (N, G, 4) and `box_labels` (N, G), -1 = empty."""
    boxes, labels = as_tensor(data["boxes"], "boxes", spec), data.get("box_labels")
    if labels is None:
        raise AdvlabError(f"{spec}: boxes without box_labels; save box_labels (N, G) with a class per box "
                          "(-1 = empty slot)")
    labels = as_tensor(labels, "box_labels", spec)
    if boxes.dim() != 3 or boxes.shape[2] != 4 or labels.shape != boxes.shape[:2] or len(boxes) != count:
        raise AdvlabError(f"{spec}: boxes {tuple(boxes.shape)} and box_labels {tuple(labels.shape)} must be "
                          f"({count}, G, 4) and ({count}, G): x1 y1 x2 y2 per box, one class per box")
    return [{"boxes": b[g >= 0].float(), "labels": g[g >= 0].long()} for b, g in zip(boxes, labels)]


def _read_tensor_file(path: Path, spec: str) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    """(x, y or None, everything in the file) from a .npz or .pt file holding keys 'x' and optional 'y'."""
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
            data = _load_pt(path)
    except Exception as exc:
        raise AdvlabError(f"{spec}: cannot read {path}: {type(exc).__name__}: {first_line(exc)}; "
                          "save a dict {'x': images, 'y': labels} with np.savez or torch.save") from exc
    if not isinstance(data, dict) or "x" not in data:
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise AdvlabError(f"{spec}: {path} has no 'x' (found {keys}); save a dict {{'x': images, 'y': labels}}")
    y = data.get("y")
    return as_tensor(data["x"], "x", spec), None if y is None else as_tensor(y, "y", spec), data


def _load_pt(path: Path) -> object:
    """A .pt file memory-mapped (its images paged in as they are read), or read whole where its format
    (torch's legacy, non-zip serialisation) cannot be mapped."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=True)


def as_tensor(value: object, key: str, spec: str) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in "biuf":
            raise AdvlabError(f"{spec}: {key} has numpy dtype {value.dtype}; save numeric arrays")
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, torch.Tensor):
        return value
    raise AdvlabError(f"{spec}: {key} is a {type(value).__name__}; save it as a numpy array or torch tensor")


def _to_nchw_view(x: torch.Tensor, spec: str) -> torch.Tensor:  # -> (N, C, H, W), no copy
    shape = tuple(x.shape)
    if x.dim() == 3 and shape[0] == 3:  # one RGB image or three grayscale ones: reading either way could be wrong
        raise AdvlabError(f"{spec}: x has shape {shape}: one RGB image or three grayscale ones? save one image as "
                          f"(1, 3, {shape[1]}, {shape[2]}), three grayscale images as (3, 1, {shape[1]}, {shape[2]})")
    if x.dim() == 3 and shape[-1] not in (1, 3):
        return x.unsqueeze(1)
    if x.dim() == 4 and shape[1] in (1, 3):
        return x
    if x.dim() == 4 and shape[3] in (1, 3):
        return x.permute(0, 3, 1, 2)
    raise AdvlabError(f"{spec}: x has shape {shape}; accepted layouts: (N, C, H, W) or (N, H, W, C) with "
                      "C in {1, 3}, or (N, H, W) grayscale (add a batch axis to a single image)")


def unit_images(x: torch.Tensor, model: nn.Module, spec: str) -> Images:
    """(N, C, H, W) uint8 or float, as stored (memory-mapped for .pt) -> float32 images in [0, 1] in the
    model's channels, converted per read for classifiers (a uint8 set stays 4x smaller than float;
    float values are checked in slices); in memory for the dense tasks, which read their images whole."""
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise AdvlabError(f"{spec}: x has dtype {x.dtype}; give float values in [0, 1] or uint8 in [0, 255]")
    c, want = int(x.shape[1]), model.in_channels
    if c != want and not (c == 1 and want == 3):
        raise AdvlabError(f"{spec}: x has {c} channels but the model wants {want}; convert the images to "
                          f"{want} channel(s) before saving")
    if x.is_floating_point():
        low, high = float("inf"), float("-inf")
        for i in range(0, len(x), RANGE_CHECK_BATCH):
            part = x[i:i + RANGE_CHECK_BATCH]
            if not bool(torch.isfinite(part).all()):
                first = i + int((~torch.isfinite(part.flatten(1))).any(1).nonzero()[0, 0])
                raise AdvlabError(f"{spec}: x holds NaN or infinite values (the first in image {first}); replace "
                                  "them (e.g. np.nan_to_num) or drop those images")
            low, high = min(low, float(part.min())), max(high, float(part.max()))
        if not (low >= 0.0 and high <= 1.0):
            raise AdvlabError(f"{spec}: x values span [{low:g}, {high:g}] but float images must lie in [0, 1]; "
                              "divide by 255 (or save uint8)")
    images = StoredImages(x, want)
    return images if annotations(model) == "labels" else as_images(images.tensor())


def match_channels(x: torch.Tensor, model: nn.Module, spec: str) -> torch.Tensor:
    c, want = int(x.shape[1]), model.in_channels
    if c == want:
        return x
    if c == 1 and want == 3:
        return x.repeat(1, 3, 1, 1)
    raise AdvlabError(f"{spec}: x has {c} channels but the model wants {want}; convert the images to "
                      f"{want} channel(s) before saving")


def check_labels(y: torch.Tensor | None, count: int, model: nn.Module, spec: str) -> torch.Tensor | None:
    """Class labels (N,) for a classifier, -1 = unknown; per-pixel masks (N, H, W) for a segmenter,
    255 = void (their size and class ids are checked against the images by the segmentation task)."""
    if y is None or annotations(model) == "boxes":  # detectors read boxes instead
        return None
    if annotations(model) == "masks":
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
