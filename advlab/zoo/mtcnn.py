"""MTCNN (Zhang, Zhang, Li & Qiao, "Joint Face Detection and Alignment Using Multitask Cascaded
Convolutional Networks", IEEE SPL 2016) under the detection contract of `advlab.zoo.detectors`, with the
pretrained P-, R- and O-Nets that ship inside facenet-pytorch (MIT; `pip install --no-deps
facenet-pytorch==2.6.0`, its pins are stale but it runs on current torch), loaded with
`weights_only=True`.

- `detect(x)`: facenet-pytorch's own cascade (`detect_face`), faces as class 1;
- `proposals(x)`: the cascade's first two stages, P-Net windows over the scale pyramid refined by the
  R-Net (kept from score 0.1 with NMS 0.9, looser than detection's 0.7 / 0.7, as the paper loosens
  Faster R-CNN's RPN), i.e. the windows the O-Net decides on, each also shifted and rescaled by a
  tenth of its side (a fresh cascade on the adversarial image picks slightly different windows);
- `proposal_logits(x, proposals)`: the O-Net's (non-face, face) log-probabilities on 48x48 crops of
  the given windows (RoIAlign, differentiable w.r.t. x); for two classes their difference is the
  logit difference DAG ascends.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import batched_nms, roi_align

from advlab.core.errors import AdvlabError

CLASSES = ("background", "face")
MIN_FACE, FACTOR, THRESHOLDS = 20, 0.709, (0.6, 0.7, 0.7)  # facenet-pytorch's MTCNN defaults
PROPOSAL_SCORE, PROPOSAL_NMS = 0.1, 0.9  # R-Net windows kept as proposals for the attack
JITTER = ((0, 0, 1), (-1, 0, 1), (1, 0, 1), (0, -1, 1), (0, 1, 1), (0, 0, 0.9), (0, 0, 1.1))  # (dx, dy, scale)
JITTER_STEP = 0.1  # shifts in window sides


def _nets() -> tuple[nn.Module, nn.Module, nn.Module]:
    try:
        import facenet_pytorch
        from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
    except ImportError as exc:
        raise AdvlabError("--model mtcnn needs facenet-pytorch: pip install --no-deps facenet-pytorch==2.6.0") from exc
    from pathlib import Path

    data = Path(facenet_pytorch.__file__).parent / "data"
    nets = []
    for cls, name in ((PNet, "pnet"), (RNet, "rnet"), (ONet, "onet")):
        net = cls(pretrained=False)
        net.load_state_dict(torch.load(data / f"{name}.pt", map_location="cpu", weights_only=True))
        nets.append(net.eval().requires_grad_(False))
    return nets[0], nets[1], nets[2]


class MTCNNDetector(nn.Module):
    """Faces in [0, 1] RGB images (N, 3, H, W), in input pixels; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = _nets()
        self.class_names = list(CLASSES)

    def detect(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        from facenet_pytorch.models.utils.detect_face import detect_face

        with torch.no_grad():
            found, _ = detect_face((x * 255).permute(0, 2, 3, 1), MIN_FACE, self.pnet, self.rnet, self.onet,
                                   list(THRESHOLDS), FACTOR, x.device)
        out = []
        for boxes in found:  # per image (D, 5) numpy: x1 y1 x2 y2 score
            b = torch.as_tensor(boxes.astype("float32")).reshape(-1, 5).to(x.device)
            out.append({"boxes": b[:, :4], "labels": torch.ones(len(b), dtype=torch.long, device=x.device),
                        "scores": b[:, 4]})
        return out

    def proposals(self, x: torch.Tensor) -> list[torch.Tensor]:
        from facenet_pytorch.models.utils.detect_face import bbreg, generateBoundingBox, imresample, rerec

        imgs = x * 255  # (N, 3, H, W) in 0..255, as the cascade expects
        h, w = imgs.shape[-2:]
        boxes, owners = [], []
        scale, side = 12.0 / MIN_FACE, min(h, w) * 12.0 / MIN_FACE
        with torch.no_grad():
            while side >= 12:  # stage 1: P-Net over the scale pyramid
                data = (imresample(imgs, (int(h * scale + 1), int(w * scale + 1))) - 127.5) * 0.0078125
                reg, probs = self.pnet(data)
                b, i = generateBoundingBox(reg, probs[:, 1], scale, THRESHOLDS[0])
                keep = batched_nms(b[:, :4], b[:, 4], i, 0.5)
                boxes.append(b[keep])
                owners.append(i[keep])
                scale, side = scale * FACTOR, side * FACTOR
            b, i = torch.cat(boxes), torch.cat(owners)
            keep = batched_nms(b[:, :4], b[:, 4], i, 0.7)
            b, i = b[keep], i[keep]
            size = torch.stack([b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]] * 2, dim=1)  # (B, 4)
            b = rerec(torch.cat([b[:, :4] + b[:, 5:9] * size, b[:, 4:5]], dim=1))
            # stage 2: R-Net on 24x24 crops, kept loosely
            reg, probs = self.rnet(self._crops(imgs, b[:, :4], i, 24))
            ok = probs[:, 1] > PROPOSAL_SCORE
            b, i, reg = torch.cat([b[ok, :4], probs[ok, 1:2]], dim=1), i[ok], reg[ok]
            keep = batched_nms(b[:, :4], b[:, 4], i, PROPOSAL_NMS)
            b = rerec(bbreg(b[keep], reg[keep]))[:, :4]
            i = i[keep]
        b, i = _jittered(b), i.repeat(len(JITTER))
        return [b[i == k] for k in range(x.shape[0])]

    def proposal_logits(self, x: torch.Tensor, proposals: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if not any(len(p) for p in proposals):
            return [p.new_zeros(0, 2) for p in proposals]
        owners = torch.cat([torch.full((len(p),), k, device=x.device) for k, p in enumerate(proposals)])
        _, _, probs = self.onet(self._crops(x * 255, torch.cat(list(proposals)), owners, 48))
        return list(probs.clamp_min(1e-12).log().split([len(p) for p in proposals]))  # (P_i, 2) each

    @staticmethod
    def _crops(imgs: torch.Tensor, boxes: torch.Tensor, owners: torch.Tensor, side: int) -> torch.Tensor:
        """(B, 3, side, side) normalised crops of 0..255 images at boxes (input pixels), by RoIAlign."""
        rois = torch.cat([owners[:, None].to(boxes), boxes], dim=1)  # (B, 5) image index, x1 y1 x2 y2
        return (roi_align(imgs, rois, side, sampling_ratio=2) - 127.5) * 0.0078125


def _jittered(boxes: torch.Tensor) -> torch.Tensor:
    """(B, 4) windows -> (len(JITTER) * B, 4): each shifted by a tenth of its side and rescaled, so
    that the O-Net is attacked on the windows a fresh cascade may pick on the adversarial image too."""
    centre, side = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]  # (B, 2) each
    out = []
    for dx, dy, scale in JITTER:
        c = centre + JITTER_STEP * side * torch.tensor([dx, dy], dtype=boxes.dtype, device=boxes.device)
        out.append(torch.cat([c - side * scale / 2, c + side * scale / 2], dim=1))
    return torch.cat(out)


def load_mtcnn(input_size: int | None) -> nn.Module:
    from advlab.zoo.detectors import ImageDetector

    return ImageDetector(MTCNNDetector(), name="mtcnn", weights="facenet-pytorch", class_names=CLASSES,
                         input_size=input_size).eval()
