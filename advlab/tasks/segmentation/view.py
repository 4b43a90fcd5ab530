"""The report's view of segmentation rows (Xie et al., ICCV 2017): mIoU and pixel accuracy clean ->
adversarial, target pixels reached, per-pixel shares on the cards, the reference / clean /
adversarial label maps with a legend, and the share of active target pixels against iterations."""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from advlab.view import fmt
from advlab.view.cards import Gallery
from advlab.view.images import image_uri, mask_image, palette
from advlab.view.task_view import (
    MEDIAN_ITERATIONS,
    RMS,
    Column,
    Plot,
    TaskView,
    active_plot,
    before_after,
    css,
    dense_distance,
    success_rate,
)


class SegmentationView(TaskView):
    label = "segmentation"
    score_label = "mIoU"
    right = "its own mIoU (over the classes in its reference or prediction) is at least 0.5"  # tasks' RIGHT_MIOU
    columns: ClassVar[tuple[Column, ...]] = (
        Column("success rate", success_rate, "images whose target pixels were reached (the reference code's test)"),
        Column("mIoU clean → adv.", before_after("miou_clean", "miou_adv")),
        Column("pixel acc. clean → adv.", before_after("pixel_acc_clean", "pixel_acc_adv")),
        Column("target hit rate", lambda r: fmt.pct(r.get("target_hit_rate"))),
        Column("changed pixels hit", lambda r: fmt.pct(r.get("changed_hit_rate")),
               "over the pixels whose target differs from the reference"),
        Column("object pixels hit", lambda r: fmt.pct(r.get("foreground_hit_rate")),
               "over the pixels whose reference class is not background (what the stop rule counts)"),
        RMS,
        MEDIAN_ITERATIONS,
    )
    glossary: ClassVar[tuple[tuple[str, str], ...]] = (
        ("success rate", "share of the attacked images whose target pixels the attack reached, by the reference "
                         "code's test (Xie et al. 2017, fooling_seg_net.m): the target pixels not at their label "
                         "are at most 1% of the image's object pixels (untargeted: 99% of its pixels fooled)."),
        ("mIoU clean → adv.", "mean intersection over union of the predicted label maps with the reference, over "
                              "all images (one confusion matrix, void ignored), before and after the attack."),
        ("pixel acc. clean → adv.", "share of the valid pixels predicted as their reference class."),
        ("target hit rate", "share of the target pixels at their adversarial label (untargeted: off their "
                            "reference class); changed pixels: the same over the pixels sent to another class; "
                            "object pixels: over the pixels whose reference class is not background."),
        ("rms", "root mean square of the perturbation per image (the paper's perceptibility), median over images."),
        ("median iterations", "iterations the attack ran per image before it stopped, median."),
    )
    status: ClassVar[dict[str, str]] = {**TaskView.status, "success": "targets reached",
                                        "failed": "targets not reached", "skipped": "not attacked (no valid pixel)"}
    MAPS: ClassVar[tuple[tuple[str, str], ...]] = (("reference", "reference"), ("clean prediction", "pred_clean"),
                                                   ("adversarial prediction", "pred_adv"))

    def card_text(self, sample: dict[str, Any], l2: Any, no_adv: str | None) -> dict[str, str]:
        return {
            "label_text": "per-pixel masks below",
            "clean_text": f"pixel accuracy {fmt.pct(sample.get('pixel_acc_clean'))}",
            "adv_text": f"pixel accuracy {fmt.pct(sample.get('pixel_acc_adv'))}, targets hit "
                        f"{fmt.pct(sample.get('target_hit'))}",
            "distance_text": dense_distance(sample),
        }

    def defense_text(self, row: dict[str, Any]) -> dict[str, str]:
        return {"label_text": "per-pixel reference", "clean_text": f"pixel accuracy {fmt.pct(row.get('pixel_acc_clean'))}",
                "adv_text": f"pixel accuracy {fmt.pct(row.get('pixel_acc_adv'))}",
                "denoised_text": f"pixel accuracy {fmt.pct(row.get('pixel_acc_denoised'))}"}

    def decorate(self, gallery: Gallery, data: dict[str, torch.Tensor], class_names: list[str]) -> None:
        maps = {key: data.get(key) for _, key in self.MAPS}
        if not all(isinstance(m, torch.Tensor) and m.dim() == 3 for m in maps.values()):
            return
        count = max(len(class_names), max(int(m[m != 255].max()) if (m != 255).any() else 0
                                          for m in maps.values()) + 1)
        colours = palette(count)
        shown: set[int] = set()
        for i, card in enumerate(gallery.cards[:maps["pred_adv"].shape[0]]):
            for caption, key in self.MAPS:
                labels = maps[key][i].long()  # (H, W)
                shown |= set(labels.unique().tolist())
                card.figures.append((caption, image_uri(mask_image(labels, colours), min_side=96)))
        gallery.legend = [(class_names[k] if k < len(class_names) else str(k), css(colours[k]))
                          for k in sorted(shown) if 0 <= k < count]

    def plot(self, data: dict[str, torch.Tensor], title: str) -> Plot | None:
        return active_plot(data, title, "target pixels")
