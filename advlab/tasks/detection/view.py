"""The report's view of detection rows (Xie et al., ICCV 2017): mAP clean -> adversarial, targets
flipped and at their adversarial label, objects still found, the reference boxes and the clean and
adversarial detections drawn with class names and scores, and the share of active targets against
iterations."""
from __future__ import annotations

from typing import Any, ClassVar

import torch

from advlab.view import fmt
from advlab.view.cards import Gallery
from advlab.view.images import boxes_image, image_uri, palette
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


def _found(row: dict[str, Any]) -> str:
    """'100% → 0% (3% at 0.25)': objects found at the detector's threshold, clean and adversarial, and at half."""
    if row.get("found_clean") is None:
        return "—"
    return (f"{fmt.pct(row.get('found_clean'))} → {fmt.pct(row.get('found_adv'))} "
            f"({fmt.pct(row.get('found_adv_lower'))} at {row.get('lower_threshold'):g})")


class DetectionView(TaskView):
    label = "detection"
    right = "at least half of its reference objects are found at the detector's score threshold"  # RIGHT_FOUND
    score_label = "mAP@0.5"
    columns: ClassVar[tuple[Column, ...]] = (
        Column("success rate", success_rate, "images with 99% of their targets flipped (the reference code's test)"),
        Column("mAP@0.5 clean → adv.", before_after("map50_clean", "map50_adv")),
        Column("COCO mAP clean → adv.", before_after("map_clean", "map_adv"),
               "mAP averaged over IoU 0.5:0.95"),
        Column("targets flipped", lambda r: fmt.pct(r.get("flipped_rate")),
               "share of the target proposals no longer predicted as their reference class"),
        Column("targets at adv. label", lambda r: fmt.pct(r.get("target_hit_rate")),
               "share of the target proposals at their adversarial label"),
        Column("objects found clean → adv.", _found,
               "reference objects still detected (same class, IoU >= 0.5) at the detector's score threshold, "
               "and at half of it after the attack"),
        RMS,
        MEDIAN_ITERATIONS,
    )
    glossary: ClassVar[tuple[tuple[str, str], ...]] = (
        ("success rate", "share of the attacked images on which the attack succeeded by the reference code's "
                         "convergence test (Xie et al. 2017, fooling_det_net.m: no target keeps its class), with "
                         "1% slack: at least 99% of the image's target proposals flipped away from their "
                         "reference class."),
        ("mAP@0.5 clean → adv.", "mean average precision at IoU 0.5 (the PASCAL VOC measure) of the detections "
                                 "against the reference boxes, before and after the attack; COCO mAP averages "
                                 "IoU 0.5 to 0.95."),
        ("targets flipped / at adv. label", "target proposals (fixed on the clean image, overlapping a reference "
                                            "box) no longer predicted as their reference class, and those at the "
                                            "adversarial label the attack drives them to."),
        ("objects found clean → adv.", "reference objects a detection of their class still finds (IoU >= 0.5) at "
                                       "the detector's score threshold, clean and adversarial, and at half the "
                                       "threshold after the attack."),
        ("rms", "root mean square of the perturbation per image (the paper's perceptibility), median over images."),
        ("median iterations", "iterations the attack ran per image before it stopped, median."),
    )
    status: ClassVar[dict[str, str]] = {**TaskView.status, "success": "targets flipped",
                                        "failed": "targets not flipped", "skipped": "not attacked (no target)"}
    DRAWINGS: ClassVar[tuple[tuple[str, str, str], ...]] = (("reference boxes", "reference", "x"),
                                                            ("clean detections", "clean", "x"),
                                                            ("adversarial detections", "adv", "x_adv"))
    MIN_SCORE: ClassVar[float] = 0.3  # detections drawn: at least this confident

    def card_text(self, sample: dict[str, Any], l2: Any, no_adv: str | None) -> dict[str, str]:
        return {
            "label_text": f"{fmt.integer(sample.get('targets'))} target proposals",
            "clean_text": f"{fmt.integer(sample.get('detections_clean'))} detections",
            "adv_text": f"{fmt.integer(sample.get('detections_adv'))} detections; targets flipped "
                        f"{fmt.pct(sample.get('flipped'))}, at their adversarial label {fmt.pct(sample.get('target_hit'))}",
            "distance_text": dense_distance(sample),
        }

    def defense_text(self, row: dict[str, Any]) -> dict[str, str]:
        objects = fmt.integer(row.get("objects"))
        return {"label_text": f"{objects} reference objects",
                "clean_text": f"{fmt.integer(row.get('found_clean'))} of {objects} found",
                "adv_text": f"{fmt.integer(row.get('found_adv'))} of {objects} found",
                "denoised_text": f"{fmt.integer(row.get('found_denoised'))} of {objects} found"}

    def decorate(self, gallery: Gallery, data: dict[str, torch.Tensor], class_names: list[str]) -> None:
        keys = [f"{prefix}_{part}" for _, prefix, _ in self.DRAWINGS for part in ("boxes", "labels", "scores")]
        if not all(isinstance(data.get(k), torch.Tensor) for k in keys):
            return
        colours = palette(max(len(class_names), int(max(int(data[k].max()) for k in keys[1::3])) + 1))
        styles = [css(rgb) for rgb in colours]
        shown: set[int] = set()
        for i, card in enumerate(gallery.cards[:data["adv_labels"].shape[0]]):
            for caption, prefix, image in self.DRAWINGS:
                labels, scores = data[f"{prefix}_labels"][i], data[f"{prefix}_scores"][i]  # (D,) each
                keep = (labels >= 0) & ((scores >= self.MIN_SCORE) | (prefix == "reference"))
                names = [class_names[k] if k < len(class_names) else str(k) for k in labels[keep].tolist()]
                texts = names if prefix == "reference" else \
                    [f"{n} {s:.2f}" for n, s in zip(names, scores[keep].tolist())]
                shown |= set(labels[keep].tolist())
                drawn = boxes_image(data[image][i], data[f"{prefix}_boxes"][i][keep], texts,
                                    [styles[k] for k in labels[keep].tolist()])
                card.figures.append((caption, image_uri(drawn, lossless=True)))  # boxes and text: PNG
        gallery.legend = [(class_names[k] if k < len(class_names) else str(k), styles[k]) for k in sorted(shown)]

    def plot(self, data: dict[str, torch.Tensor], title: str) -> Plot | None:
        return active_plot(data, title, "target proposals")
