"""DUNET, the denoising U-Net of HGD (Liao, Liang, Dong, Pang, Hu & Zhu, "Defense against
Adversarial Attacks Using High-Level Representation Guided Denoiser", CVPR 2018, Sec. 3.2).

Encoder: 5 stages of 3x3 conv + BN + ReLU blocks with 2, 3, 3, 3, 3 convolutions and 64, 128, 256,
256, 256 channels; stages 2-5 start with a stride-2 convolution. Decoder: 4 fuse stages, each a
bilinear upsampling of the deeper map to the lateral map's size, a concatenation with it and a
conv block; a final 1x1 convolution predicts the adversarial noise dx, and the output is
x - dx (a residual). About 11M parameters at width 1; `width` scales every channel count so a
compact version trains on a CPU. The final convolution starts at zero, so an untrained DUNET is
the identity and training only moves it away from there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

ENCODER = ((2, 64), (3, 128), (3, 256), (3, 256), (3, 256))  # (convs, channels) per stage
DECODER = ((3, 256), (3, 256), (3, 128), (2, 64))  # fuse stages, deepest first


def conv_block(c_in: int, c_out: int, convs: int, stride: int = 1) -> nn.Sequential:
    """`convs` x (3x3 conv, BN, ReLU); the first convolution carries the stride."""
    layers: list[nn.Module] = []
    for k in range(convs):
        layers += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, stride=stride if k == 0 else 1, padding=1,
                             bias=False),
                   nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class DUNET(nn.Module):
    """(N, C, H, W) images in [0, 1] -> denoised images x - dx (N, C, H, W); any H, W."""

    def __init__(self, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        if not 0 < width <= 4:
            raise ValueError(f"width must be in (0, 4], got {width!r}")
        self.in_channels, self.width = in_channels, width
        enc = [(convs, max(4, round(ch * width))) for convs, ch in ENCODER]
        dec = [(convs, max(4, round(ch * width))) for convs, ch in DECODER]
        self.encoder = nn.ModuleList()
        c_prev = in_channels
        for i, (convs, ch) in enumerate(enc):
            self.encoder.append(conv_block(c_prev, ch, convs, stride=1 if i == 0 else 2))
            c_prev = ch
        self.decoder = nn.ModuleList()
        laterals = [ch for _, ch in enc[:-1]][::-1]  # stage 4, 3, 2, 1 outputs
        for (convs, ch), lateral in zip(dec, laterals):
            self.decoder.append(conv_block(c_prev + lateral, ch, convs))
            c_prev = ch
        self.noise = nn.Conv2d(c_prev, in_channels, 1)
        nn.init.zeros_(self.noise.weight)
        nn.init.zeros_(self.noise.bias)

    def predict_noise(self, x: torch.Tensor) -> torch.Tensor:
        """The estimated adversarial noise dx (N, C, H, W)."""
        h = (x - 0.5) / 0.5
        skips = []
        for stage in self.encoder:
            h = stage(h)
            skips.append(h)  # (N, c_i, H / 2^i, W / 2^i)
        for stage, lateral in zip(self.decoder, skips[-2::-1]):
            h = F.interpolate(h, size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            h = stage(torch.cat([h, lateral], dim=1))
        return self.noise(h)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.predict_noise(x)
