"""Image tensors -> inline data URIs (PIL) at the size the report shows them, and the amplified perturbation
view. A photo larger than its figure is shrunk to it and stored as JPEG; an amplified perturbation (where
every level matters) and a small image enlarged pixel for pixel stay PNG."""
from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

MAX_SIDE = 256  # larger images are shrunk so that the page stays a reasonable size
FIGURE_PX = 122  # the side a card's figure is shown at (templates/index.html, `figure img`): images are stored so
JPEG_QUALITY = 90


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(C, H, W) or (H, W) float in [0, 1] -> (H, W) or (H, W, 3) uint8; NaN -> 0, clipped."""
    a = img.detach().to("cpu", torch.float64)
    a = torch.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)
    if a.ndim == 3:
        c = a.shape[0]
        a = a[:3] if c >= 3 else a[0]
        if a.ndim == 3:
            a = a.permute(1, 2, 0)
    elif a.ndim != 2:
        raise ValueError(f"expected an image of shape (C,H,W) or (H,W), got {tuple(img.shape)}")
    return (a * 255.0 + 0.5).floor().to(torch.uint8).numpy()


def png_bytes(img: torch.Tensor, min_side: int = 0) -> bytes:
    """PNG encoding of one image tensor (see `to_uint8`); an image whose longer side is below
    `min_side` is enlarged by a whole factor with nearest-neighbour so that its pixels stay sharp."""
    pil = Image.fromarray(to_uint8(img))
    if max(pil.size) > MAX_SIDE:
        pil.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    elif 0 < max(pil.size) < min_side:
        factor = -(-min(min_side, MAX_SIDE) // max(pil.size))
        pil = pil.resize((pil.width * factor, pil.height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """'data:image/png;base64,...' for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image_uri(img: torch.Tensor, min_side: int = 0, *, lossless: bool = False, side: int = FIGURE_PX) -> str:
    """One image tensor as an inline data URI for a figure of `side` CSS pixels: a larger image shrunk to it
    (JPEG, or PNG where `lossless`: an amplified perturbation, a drawing), a smaller one as it is or, below `min_side`,
    enlarged pixel for pixel (PNG: its pixels stay sharp)."""
    pil = Image.fromarray(to_uint8(img))
    if max(pil.size) <= side:
        return data_uri(png_bytes(img, min_side))
    pil.thumbnail((side, side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if lossless:
        pil.save(buf, format="PNG", optimize=True)
        return data_uri(buf.getvalue())
    pil.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def amplified_perturbation(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """(x_adv - x) divided by its max |value| over the image, mapped to [0, 1] around 0.5 gray.

    Works on one image (C, H, W) or a batch (N, C, H, W), scaling each image separately;
    where x_adv == x the result is exactly 0.5.
    """
    d = torch.nan_to_num(x_adv.detach().double() - x.detach().double(), nan=0.0, posinf=0.0, neginf=0.0)
    batched = d.ndim == 4
    flat = d.reshape(d.shape[0], -1) if batched else d.reshape(1, -1)
    scale = flat.abs().amax(dim=1)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    shape = (-1,) + (1,) * (d.ndim - 1) if batched else ()
    return (0.5 + 0.5 * d / scale.reshape(shape)).float()


def palette(num_classes: int) -> torch.Tensor:
    """(K, 3) colours in [0, 1]: the PASCAL VOC colour map (class 0 black, then bit-interleaved colours)."""
    colours = torch.zeros(max(num_classes, 1), 3)
    for k in range(num_classes):
        c, r, g, b = k, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours[k] = torch.tensor([r, g, b]) / 255.0
    return colours


def mask_image(labels: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """(H, W) class ids -> (3, H, W) colour image; ids outside the palette (255 = void) are white."""
    ids = labels.long()
    known = (ids >= 0) & (ids < colours.shape[0])
    rgb = colours[ids.clamp(0, colours.shape[0] - 1)].permute(2, 0, 1)  # (3, H, W)
    return torch.where(known[None], rgb, torch.ones_like(rgb))


LABEL_PX = 11  # box captions are this tall as shown


def boxes_image(img: torch.Tensor, boxes: torch.Tensor, captions: list[str], colours: list[str],
                min_side: int = 192) -> torch.Tensor:
    """(C, H, W) in [0, 1] with boxes (D, 4) x1 y1 x2 y2 drawn and captioned (torchvision's
    `draw_bounding_boxes`), first enlarged by a whole factor so that small images keep their pixels;
    captions are set white on the box's colour in DejaVu Sans (matplotlib's) at a size that reads
    `LABEL_PX` tall once the figure is shown at `FIGURE_PX`; -> (3, H', W') in [0, 1]."""
    from matplotlib import font_manager
    from torchvision.utils import draw_bounding_boxes

    factor = max(1, -(-min_side // max(img.shape[-2:])))
    rgb = torch.from_numpy(to_uint8(img)).permute(2, 0, 1) if img.shape[0] >= 3 else \
        torch.from_numpy(to_uint8(img)).expand(3, -1, -1)  # (3, H, W) uint8
    big = rgb.repeat_interleave(factor, dim=1).repeat_interleave(factor, dim=2)
    if len(boxes):
        size = round(LABEL_PX * max(big.shape[-2:]) / FIGURE_PX)
        big = draw_bounding_boxes(big, boxes.float() * factor, labels=captions, colors=colours, width=2,
                                  font=font_manager.findfont("DejaVu Sans"), font_size=size, fill_labels=True,
                                  label_colors="white", label_background_colors=colours)
    return big.float() / 255.0
