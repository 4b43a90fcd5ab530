"""Images with boxes for detectors, from local roots (never downloaded):

- `coco:ROOT[:SPLIT]`: COCO (Lin et al., ECCV 2014) through `torchvision.datasets.CocoDetection`,
  images in ROOT/SPLIT/ and ROOT/annotations/instances_SPLIT.json, default split val2017; crowd
  boxes are skipped;
- `voc:ROOT[:YEAR[:SPLIT]]` given a detector: PASCAL VOC (Everingham et al., IJCV 2010) through
  `torchvision.datasets.VOCDetection`, default 2007 test; difficult objects are skipped.

Class names map to the model's classes by name (case and spaces ignored; VOC's names also by their
COCO spelling, so torchvision's COCO detectors read VOC); a model with COCO's 91 category slots
(or one without class names) takes COCO's category ids as they are. With `--input-size S` the
shorter side goes to S and the centre S x S is kept, boxes scaled, shifted and clipped with it (a
box that keeps less than half its area is dropped). Without it, images of different sizes are
padded with black at the bottom and right to the largest height and width, so no box is cut (the
attack may then also change padding pixels, and distances count them).
"""
from __future__ import annotations

from pathlib import Path
from xml.etree.ElementTree import Element

import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from advlab.core.errors import AdvlabError, first_line
from advlab.data.files import decode
from advlab.data.image_set import ImageSet
from advlab.data.masks import voc_parts

VOC_AS_COCO = {"aeroplane": "airplane", "motorbike": "motorcycle", "sofa": "couch", "tvmonitor": "tv",
               "diningtable": "dining table", "pottedplant": "potted plant"}
KEPT_AREA = 0.5  # a box cropped to less than this share of its area is dropped


def load_coco(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    from torchvision.datasets import CocoDetection

    root, _, split = arg.partition(":")
    root_path, split = Path(root).expanduser(), split or "val2017"
    annotations = root_path / "annotations" / f"instances_{split}.json"
    if not annotations.is_file() or not (root_path / split).is_dir():
        raise AdvlabError(f"{spec}: no COCO {split} under {root_path} (wanted {split}/ and annotations/"
                          f"instances_{split}.json); extract the images and annotations there")
    try:
        dataset = CocoDetection(str(root_path / split), str(annotations))
    except (OSError, ValueError, KeyError) as exc:
        raise AdvlabError(f"{spec}: cannot read {annotations} ({first_line(exc)}); give COCO's instances "
                          "json") from None
    names = {c["id"]: c["name"] for c in dataset.coco.loadCats(dataset.coco.getCatIds())}
    to_class = _class_map(names, model, spec, by_id=model.num_classes == 91 or not model.named_classes)
    items = []
    for image_id in dataset.ids[:n] if n else dataset.ids:
        info = dataset.coco.loadImgs(image_id)[0]
        boxes, labels = [], []
        for a in dataset.coco.loadAnns(dataset.coco.getAnnIds(imgIds=image_id)):
            if a.get("iscrowd"):
                continue
            x, y, w, h = a["bbox"]
            boxes.append([x, y, x + w, y + h])
            labels.append(to_class[a["category_id"]])
        items.append((root_path / split / info["file_name"], boxes, labels))
    return _image_set(spec, items, model)


def load_voc_boxes(spec: str, arg: str, model: nn.Module, n: int | None) -> ImageSet:
    from torchvision.datasets import VOCDetection

    root, year, split = voc_parts(spec, arg, "2007", "test")
    try:
        dataset = VOCDetection(str(Path(root).expanduser()), year=year, image_set=split, download=False)
    except (RuntimeError, ValueError, OSError) as exc:
        raise AdvlabError(f"{spec}: no VOC{year} {split} detection set under {root} ({first_line(exc)}); "
                          f"extract VOC{year} into {root} (it holds VOCdevkit/VOC{year}/)") from None
    items = []
    files = list(zip(dataset.images, dataset.annotations))
    for image, annotation in files[:n] if n else files:
        objects = dataset.parse_voc_xml(_xml_root(Path(annotation), spec))["annotation"].get("object", [])
        objects = [o for o in (objects if isinstance(objects, list) else [objects]) if o.get("difficult") != "1"]
        names = {o["name"]: o["name"] for o in objects}
        to_class = _class_map(names, model, spec, by_id=False)
        boxes = [[float(o["bndbox"][k]) for k in ("xmin", "ymin", "xmax", "ymax")] for o in objects]
        items.append((Path(image), boxes, [to_class[o["name"]] for o in objects]))
    return _image_set(spec, items, model)


def _xml_root(path: Path, spec: str) -> Element:
    from xml.etree.ElementTree import ParseError, parse

    try:
        return parse(path).getroot()
    except (OSError, ParseError) as exc:
        raise AdvlabError(f"{spec}: cannot read annotation {path} ({first_line(exc)}); replace it") from None


def _class_map(names: dict, model: nn.Module, spec: str, *, by_id: bool) -> dict:
    """Data set class key -> the model's class index: by id (COCO ids on a 91-slot model) or by name."""
    if by_id:
        if any(not 0 < int(k) < model.num_classes for k in names):
            raise AdvlabError(f"{spec}: category ids span {min(names)}..{max(names)} but {model.name} has classes "
                              f"1..{model.num_classes - 1}; give --class-names so that classes match by name")
        return {k: int(k) for k in names}
    own = {_key(c): i for i, c in enumerate(model.class_names)}
    out = {}
    for key, name in names.items():
        index = own.get(_key(name), own.get(_key(VOC_AS_COCO.get(name, name))))
        if index is None:
            raise AdvlabError(f"{spec}: class {name!r} is not one of {model.name}'s classes "
                              f"({', '.join(model.class_names[:6])}, ...); use a detector trained on these classes")
        out[key] = index
    return out


def _key(name: str) -> str:
    return name.lower().replace(" ", "").replace("_", "")


def _image_set(spec: str, items: list[tuple[Path, list, list]], model: nn.Module) -> ImageSet:

    if not items:
        raise AdvlabError(f"{spec}: no images found")
    mode = "RGB" if model.in_channels == 3 else "L"
    images, targets = [], []
    for path, boxes, labels in items:
        image = decode(path, mode)  # (C, H, W) uint8
        b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        targets.append({"boxes": b, "labels": torch.tensor(labels, dtype=torch.long)})
        images.append(image)
    if model.input_size is not None:
        pairs = [_resize_crop(im, t, model.input_size) for im, t in zip(images, targets)]
        images, targets = [p[0] for p in pairs], [p[1] for p in pairs]
    elif len({tuple(im.shape[-2:]) for im in images}) > 1:  # pad, never crop: boxes stay where they are
        height, width = max(im.shape[-2] for im in images), max(im.shape[-1] for im in images)
        images = [TF.pad(im, [0, 0, width - im.shape[-1], height - im.shape[-2]]) for im in images]
    x = torch.stack(images).float().div_(255.0)
    return ImageSet(x, torch.full((len(x),), -1, dtype=torch.int64), [p.name for p, _, _ in items], spec,
                    "ground-truth", None, targets)


def _resize_crop(image: torch.Tensor, target: dict[str, torch.Tensor],
                 size: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Shorter side to `size`, centre `size` x `size`; boxes scaled, shifted, clipped, mostly-cut ones dropped."""
    h, w = image.shape[-2:]
    scale = size / min(h, w)
    image = TF.resize(image, [size], antialias=True)
    top, left = (image.shape[-2] - size) // 2, (image.shape[-1] - size) // 2
    image = TF.center_crop(image, [size, size])
    boxes = target["boxes"] * scale - torch.tensor([left, top, left, top], dtype=torch.float32)
    clipped = boxes.clamp(0, size)
    keep = _area(clipped) >= KEPT_AREA * _area(boxes).clamp_min(1e-6)
    return image, {"boxes": clipped[keep], "labels": target["labels"][keep]}


def _area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]).clamp_min(0) * (boxes[:, 3] - boxes[:, 1]).clamp_min(0)
