"""The lab's own detector: a torchvision Faster R-CNN (Ren et al., NeurIPS 2015) with a small
convolutional backbone, for the 48x48 RGB fashion-scenes, trained on CPU in minutes. Its weights ship
with advlab (`advlab/zoo/weights/fashion_detector.pt`), so the embedded detection default runs offline;
this command regenerates them and prints the held-out mAP@0.5:

    python -m advlab.cli.lab_nets detector --out advlab/zoo/weights/fashion_detector.pt
    advlab attack --method dag --task detection        # uses them (model advlab.zoo.detnet:fashion_detector)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from advlab.data.scenes import SCENE_CLASSES, SCENE_SIZE
from advlab.zoo.training import adam_cosine

WEIGHTS = Path(__file__).with_name("weights") / "fashion_detector.pt"
MEAN, STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
ROI_SIZE = 5  # RoIAlign output side: the box head sees (64, 5, 5) per proposal


def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallBackbone(nn.Sequential):
    """(N, 3, H, W) -> (N, 64, H/4, W/4): two conv stages with 2x2 max pooling, then two convs."""

    out_channels = 64

    def __init__(self) -> None:
        super().__init__(*_conv(3, 32), *_conv(32, 32), nn.MaxPool2d(2), *_conv(32, 64), *_conv(64, 64),
                         nn.MaxPool2d(2), *_conv(64, 64), *_conv(64, self.out_channels))


def fashion_detector(num_classes: int = len(SCENE_CLASSES)) -> FasterRCNN:
    """The factory for `--model advlab.zoo.detnet:fashion_detector`: Faster R-CNN on one stride-4 feature
    map, square-ish anchors of 12-40 px (garments are 18-30 px), images kept at 48 px."""
    anchors = AnchorGenerator(sizes=((12, 20, 28, 40),), aspect_ratios=((0.5, 1.0, 2.0),))
    net = FasterRCNN(SmallBackbone(), min_size=SCENE_SIZE, max_size=SCENE_SIZE,
                     image_mean=list(MEAN), image_std=list(STD), rpn_anchor_generator=anchors,
                     box_roi_pool=MultiScaleRoIAlign(["0"], output_size=ROI_SIZE, sampling_ratio=2),
                     box_head=TwoMLPHead(SmallBackbone.out_channels * ROI_SIZE ** 2, 256),
                     box_predictor=FastRCNNPredictor(256, num_classes),
                     rpn_pre_nms_top_n_train=300, rpn_post_nms_top_n_train=150, rpn_pre_nms_top_n_test=300,
                     rpn_post_nms_top_n_test=150, rpn_batch_size_per_image=128, box_batch_size_per_image=64)
    net.class_names = list(SCENE_CLASSES) if num_classes == len(SCENE_CLASSES) else None  # advlab reads them
    return net


def train_detector(net: FasterRCNN, x: torch.Tensor, boxes: list[torch.Tensor], labels: list[torch.Tensor], *,
                   epochs: int, batch_size: int = 32, lr: float = 3e-3, seed: int = 0,
                   progress: bool = True) -> FasterRCNN:
    """Adam on torchvision's Faster R-CNN losses (RPN and box head), cosine learning rate; x (N, 3, H, W)
    in [0, 1], per image boxes (G, 4) x1, y1, x2, y2 and labels (G,) in 1..K-1."""
    def loss_of(idx: torch.Tensor) -> torch.Tensor:
        targets = [{"boxes": boxes[j], "labels": labels[j]} for j in idx.tolist()]
        return sum(net(list(x[idx]), targets).values())  # torchvision's RPN and box-head losses

    return adam_cosine(net, x.shape[0], loss_of, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                       progress=progress, desc="detector")


