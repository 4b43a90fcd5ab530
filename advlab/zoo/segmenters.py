"""Segmentation models: torchvision's by name through its own weights API (the normal download and
cache path for users with internet), wrapped as `ImageSegmenter` ([0, 1] images in, (N, K, H, W)
logits at the input resolution out). `--weights none` builds the architecture without pulling any
weights, backbone included."""
from __future__ import annotations

from collections.abc import Sequence

import torchvision

from advlab.data.masks import VOC_CLASSES
from advlab.zoo.torchvision_weights import build_with_weights
from advlab.zoo.wrappers import ImageClassifier, wrap

SEGMENTATION_MODELS = ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
                       "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_torchvision_segmenter(name: str, weights: str | None, *, mean: Sequence[float] | None,
                               std: Sequence[float] | None) -> ImageClassifier:
    """A torchvision segmentation model (`weights`: COCO_WITH_VOC_LABELS_V1, DEFAULT or none)."""
    if weights is None or str(weights).lower() == "none":
        net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=len(VOC_CLASSES))
        return wrap(net, name, "none", mean or IMAGENET_MEAN, std or IMAGENET_STD, None, VOC_CLASSES,
                     task="segmentation")
    net, w = build_with_weights(name, weights)
    preset = w.transforms()
    return wrap(net, name, w.name, mean or preset.mean, std or preset.std, None, list(w.meta["categories"]),
                 task="segmentation")
