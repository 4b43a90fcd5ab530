"""fashion-scenes: an offline segmentation and detection data set the lab composes from real
Fashion-MNIST garments (Xiao et al., 2017). Each RGB canvas holds a few garments at random
positions, scales and tints on a smooth random texture; every pixel is labeled with its garment's class
(1..10) or background (0), and every garment has a box. Train scenes use the train split's garments,
test scenes the test split's; scene i is a pure function of (split, i, seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

SCENE_CLASSES = ("background", "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                 "Bag", "Ankle boot")
SCENE_SIZE = 48  # canvas side in pixels
GARMENTS = (2, 3)  # garments per scene: at least, at most
SCALE = (18, 30)  # garment side in pixels: at least, at most
FOREGROUND = 0.15  # a garment pixel brighter than this is the garment (its mask)
BACKGROUND = 0.5  # the background texture's brightest value
SCENE_SEED = 0  # the data set's own seed: fashion-scenes is one fixed data set


@dataclass
class Scenes:
    x: torch.Tensor  # (N, 3, S, S) float32 in [0, 1]
    masks: torch.Tensor  # (N, S, S) uint8: 0 background, 1..10 the garment classes
    boxes: list[torch.Tensor]  # per scene (G, 4) float32 x1, y1, x2, y2 (pixels, exclusive end)
    box_labels: list[torch.Tensor]  # per scene (G,) int64 in 1..10


def compose(garments: torch.Tensor, labels: torch.Tensor, n: int, *, split: str, seed: int = SCENE_SEED) -> Scenes:
    """n scenes from (M, 28, 28) garments in [0, 1] with (M,) labels 0..9. Scene i draws its garments,
    sizes, places and tints from a generator seeded by (seed, split, i), so the first n scenes are the
    same whatever n is."""
    size = SCENE_SIZE
    xs = torch.zeros(n, 3, size, size)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    boxes, box_labels = [], []
    salt = 0 if split == "train" else 1
    for i in range(n):
        gen = torch.Generator().manual_seed(((seed * 2 + salt) * 1_000_003 + i) & 0x7FFFFFFFFFFFFFFF)
        coarse = BACKGROUND * torch.rand(1, 3, 6, 6, generator=gen)  # a smooth random texture behind the garments
        xs[i] = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        count = int(torch.randint(GARMENTS[0], GARMENTS[1] + 1, (1,), generator=gen))
        picks = torch.randint(0, garments.shape[0], (count,), generator=gen)
        scene_boxes, scene_labels = [], []
        for j in picks.tolist():
            side = int(torch.randint(SCALE[0], SCALE[1] + 1, (1,), generator=gen))
            top, left = (int(v) for v in torch.randint(0, size - side + 1, (2,), generator=gen))
            tint = 0.4 + 0.6 * torch.rand(3, generator=gen)  # (3,) a colour per garment
            patch = F.interpolate(garments[j][None, None], size=(side, side), mode="bilinear",
                                  align_corners=False)[0, 0].clamp(0, 1)  # (side, side)
            on = patch > FOREGROUND
            region = xs[i, :, top:top + side, left:left + side]
            region[:] = torch.where(on, patch * tint[:, None, None], region)
            masks[i, top:top + side, left:left + side][on] = int(labels[j]) + 1
            scene_boxes.append((left, top, left + side, top + side))
            scene_labels.append(int(labels[j]) + 1)
        boxes.append(torch.tensor(scene_boxes, dtype=torch.float32))
        box_labels.append(torch.tensor(scene_labels, dtype=torch.long))
    return Scenes(xs, masks, boxes, box_labels)
