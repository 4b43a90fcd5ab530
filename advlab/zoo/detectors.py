"""Detection models: the detection task's model contract and its adapter for torchvision's two-stage
detectors (the Faster R-CNN family), loaded by name through torchvision's own weights API.

The contract (what DAG on detection needs, Xie et al., ICCV 2017):

- `proposals(x)`: region proposals on the clean images, per image (P_i, 4) x1, y1, x2, y2 in input
  pixels; the attack then holds them fixed (the reference code: RPN NMS 0.9, top 3000);
- `proposal_logits(x, proposals)`: the box head's class logits (P_i, K) for given proposals,
  differentiable w.r.t. x (background is class 0);
- `detect(x)`: the usual post-processed detections, per image {boxes (D, 4), labels (D,), scores (D,)};
- optionally `score_threshold`: the score at which it calls a detection (default 0.5): unlabeled
  data's reference boxes are the clean detections above it, and rows report the objects still found
  at it and at half of it;
- optionally `class_names`: a list of class names, background (class 0) first; its length is the
  class count. Without it, pass `--class-names FILE` or `--num-classes K` (K with background); every
  count given (and a torchvision detector's box predictor) must agree, and a detector that states
  none is refused before the run starts;
- optionally `weights_source`: where a factory that loads its own weights got them (e.g.
  "facenet-pytorch vggface2"), recorded as the model's `weights` instead of a warning that they may
  be random.

Detectors normalise their own inputs, so `--mean`/`--std` are refused for them.

`ImageDetector` implements it for any torchvision `GeneralizedRCNN` (backbone -> RoI pooling -> box
head on the given proposals; box regression is not attacked). A bring-your-own factory may return
such a network, or any object with those three methods (it is then used as it is).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torchvision
from torch import nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from advlab.core.errors import AdvlabError

DETECTION_MODELS = ("fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
                    "fasterrcnn_mobilenet_v3_large_320_fpn")
ATTACK_RPN_NMS, ATTACK_PROPOSALS = 0.9, 3000  # the paper's proposal setting during the attack
Detections = list[dict[str, torch.Tensor]]  # per image: boxes (D, 4), labels (D,), scores (D,)


class ImageDetector(nn.Module):
    """[0, 1] images (N, C, H, W) -> detections, proposals and proposal logits, in input pixels.
    The network's own transform normalises and resizes (torchvision's GeneralizedRCNNTransform)."""

    task = "detection"
    annotations = "boxes"  # boxes with a class each

    def __init__(self, net: nn.Module, *, name: str, weights: str, class_names: Sequence[str],
                 in_channels: int = 3, named_classes: bool = True, input_size: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.name, self.weights = name, weights
        self.class_names = list(class_names)
        self.named_classes = named_classes
        self.in_channels = in_channels
        self.input_size = input_size  # image files are resized and cropped to it when loaded; None: as they are
        self.autocast_dtype: torch.dtype | None = None
        self.rcnn = isinstance(net, GeneralizedRCNN)
        if not self.rcnn and not all(callable(getattr(net, m, None)) for m in ("proposals", "proposal_logits",
                                                                                 "detect")):
            raise AdvlabError(f"{name} is neither a torchvision two-stage detector nor an object with proposals(x), "
                              "proposal_logits(x, proposals) and detect(x); see advlab/zoo/detectors.py")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def score_threshold(self) -> float | None:
        """The wrapped object's own `score_threshold`, if it states one."""
        return getattr(self.net, "score_threshold", None)

    def adopt_class_names(self, names: Sequence[str]) -> None:
        if not self.named_classes and len(names) == self.num_classes:
            self.class_names, self.named_classes = list(names), True

    def forward(self, x: torch.Tensor) -> Detections:
        return self.detect(x)

    def detect(self, x: torch.Tensor) -> Detections:
        """Post-processed detections per image (boxes in input pixels)."""
        if not self.rcnn:
            return self.net.detect(x)
        return self.net(list(x))

    def proposals(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Region proposals per image (P_i, 4) in input pixels, with the paper's RPN setting."""
        if not self.rcnn:
            return self.net.proposals(x)
        with torch.no_grad(), self._attack_rpn():
            images, _ = self.net.transform(list(x))
            features = self._features(images.tensors)
            boxes, _ = self.net.rpn(images, features)
        return [b / _scale(size, x.shape[-2:]).to(b.device) for b, size in zip(boxes, images.image_sizes)]

    def proposal_logits(self, x: torch.Tensor, proposals: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """The box head's class logits (P_i, K) for the given proposals (input pixels), differentiable."""
        if not self.rcnn:
            return self.net.proposal_logits(x, proposals)
        images, _ = self.net.transform(list(x))
        features = self._features(images.tensors)
        scaled = [p * _scale(size, x.shape[-2:]).to(p.device) for p, size in zip(proposals, images.image_sizes)]
        heads = self.net.roi_heads
        pooled = heads.box_head(heads.box_roi_pool(features, scaled, images.image_sizes))
        logits, _ = heads.box_predictor(pooled)  # (sum P_i, K); box regression is not attacked
        return list(logits.float().split([len(p) for p in proposals]))

    def padded_logits(self, x: torch.Tensor, proposals: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """(N, K, P) logits for proposals padded to P per image ((N, P, 4), `counts` (N,) real ones);
        padded positions are 0 (their targets are void)."""
        n, p = proposals.shape[:2]
        lists = [proposals[i, :int(c)] for i, c in enumerate(counts.tolist())]
        out = torch.zeros(n, p, self.num_classes, device=x.device)
        mask = torch.arange(p, device=x.device)[None] < counts[:, None]  # (N, P)
        if int(counts.sum()):
            out = out.masked_scatter(mask[..., None], torch.cat(self.proposal_logits(x, lists)))
        return out.transpose(1, 2)  # (N, K, P)

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "weights": self.weights, "task": self.task, "num_classes": self.num_classes,
                "input_size": self.input_size, "in_channels": self.in_channels, "class_names": self.class_names}

    def _features(self, images: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.net.backbone(images)
        return OrderedDict([("0", features)]) if isinstance(features, torch.Tensor) else features

    @contextmanager
    def _attack_rpn(self) -> Iterator[None]:
        rpn = self.net.rpn
        saved = rpn.nms_thresh, dict(rpn._pre_nms_top_n), dict(rpn._post_nms_top_n)
        rpn.nms_thresh = ATTACK_RPN_NMS
        rpn._pre_nms_top_n["testing"] = max(rpn._pre_nms_top_n["testing"], ATTACK_PROPOSALS)
        rpn._post_nms_top_n["testing"] = ATTACK_PROPOSALS
        try:
            yield
        finally:
            rpn.nms_thresh, rpn._pre_nms_top_n, rpn._post_nms_top_n = saved


def _scale(resized: Sequence[int], original: Sequence[int]) -> torch.Tensor:
    """(4,) factors from input pixels to the transform's resized pixels (x1, y1, x2, y2)."""
    sy, sx = resized[0] / original[0], resized[1] / original[1]
    return torch.tensor([sx, sy, sx, sy])


def load_torchvision_detector(name: str, weights: str | None, input_size: int | None = None) -> ImageDetector:
    """A torchvision Faster R-CNN by name (`weights`: COCO_V1, DEFAULT or none; none pulls no backbone
    weights either), through torchvision's own weights API; `input_size` sizes image files as they load
    (the detector itself takes any size)."""
    from advlab.zoo.torchvision_weights import build_with_weights

    if weights is None or str(weights).lower() == "none":
        net = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91)
        return ImageDetector(_frozen(net), name=name, weights="none", class_names=[str(i) for i in range(91)],
                             named_classes=False, input_size=input_size).eval()
    net, w = build_with_weights(name, weights)
    return ImageDetector(_frozen(net), name=name, weights=w.name, class_names=list(w.meta["categories"]),
                         input_size=input_size).eval()


def _frozen(net: nn.Module) -> nn.Module:
    for p in net.parameters():
        p.requires_grad_(False)
    return net

