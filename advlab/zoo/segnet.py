"""The lab's own segmentation network: a small U-Net (Ronneberger et al., MICCAI 2015) for the
48x48 RGB fashion-scenes, trained on CPU in minutes. Its weights ship with advlab
(`advlab/zoo/weights/fashion_segnet.pt`, about 1.2 MB), so the embedded segmentation default runs offline;
this command regenerates them and prints the held-out mIoU:

    python -m advlab.cli.lab_nets segmenter --out advlab/zoo/weights/fashion_segnet.pt
    advlab attack --method dag --task segmentation        # uses them (model advlab.zoo.segnet:fashion_segnet)
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from advlab.data.scenes import SCENE_CLASSES
from advlab.zoo.training import adam_cosine

WEIGHTS = Path(__file__).with_name("weights") / "fashion_segnet.pt"
MEAN, STD = 0.5, 0.5


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FashionSegNet(nn.Module):
    """Four encoder stages (w, 2w, 4w, 4w channels; 2x2 max pooling between them), three decoder stages
    (bilinear upsampling, skip concatenation), a 1x1 classifier: (N, 3, H, W) -> (N, K, H, W)."""

    def __init__(self, num_classes: int = len(SCENE_CLASSES), width: int = 16) -> None:
        super().__init__()
        w = width
        self.encoders = nn.ModuleList([_block(3, w), _block(w, 2 * w), _block(2 * w, 4 * w), _block(4 * w, 4 * w)])
        self.decoders = nn.ModuleList([_block(8 * w, 4 * w), _block(6 * w, 2 * w), _block(3 * w, w)])
        self.head = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, encode in enumerate(self.encoders):  # (N, w, H, W), (N, 2w, H/2, W/2), ... (N, 4w, H/8, W/8)
            x = encode(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for decode, skip in zip(self.decoders, reversed(skips[:-1])):  # back up to (N, w, H, W)
            x = decode(torch.cat([F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False), skip],
                                 dim=1))
        return self.head(x)  # (N, K, H, W)


def fashion_segnet(num_classes: int = len(SCENE_CLASSES)) -> nn.Module:
    """The factory for `--model advlab.zoo.segnet:fashion_segnet`."""
    return FashionSegNet(num_classes)


def train_segnet(net: nn.Module, x: torch.Tensor, masks: torch.Tensor, *, epochs: int, batch_size: int = 32,
                 lr: float = 3e-3, seed: int = 0, progress: bool = True) -> nn.Module:
    """Adam on per-pixel cross-entropy, cosine learning rate; x (N, 3, H, W) in [0, 1], masks (N, H, W)
    (uint8 or int64 class ids)."""
    return adam_cosine(net, x.shape[0], lambda idx: F.cross_entropy(net((x[idx] - MEAN) / STD), masks[idx].long()),
                       epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, progress=progress, desc="segnet")


