"""Report views, one per task, registered by name like the task adapters (`advlab.tasks`): what a
row's summary cells, image cards and trace plot show. The report looks a row's view up by its
`task` key and never branches on the task; a row without one (results.json from before tasks
existed) renders as classification.

A view adds task-specific summary columns, writes a card's text from one `samples` record, draws
what the arrays file holds beyond x and x_adv under each card (label maps, boxes), and picks the
trace plot.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from advlab.core.catalog import Catalog
from advlab.report import fmt
from advlab.report.images import boxes_image, image_uri, mask_image, palette
from advlab.report.plots import active_share_uri, l2_vs_queries_uri

if TYPE_CHECKING:
    from advlab.report.cards import Gallery


@dataclass(frozen=True)
class Column:
    """A task-specific summary column: its header, the row key it reads and how to format it."""

    header: str
    cell: Callable[[dict[str, Any]], str]
    title: str = ""  # the header's tooltip


@dataclass(frozen=True)
class Plot:
    uri: str
    title: str
    caption: str


class TaskView:
    """The classification view, and the base every task's view extends."""

    task: ClassVar[str] = "classification"
    columns: ClassVar[tuple[Column, ...]] = ()

    def card_text(self, sample: dict[str, Any], l2: Any, no_adv: str | None) -> dict[str, str]:
        """label_text, clean_text, adv_text and distance_text of one card."""
        queries = sample.get("queries")
        return {
            "label_text": _class_text(sample.get("label_name"), sample.get("label")),
            "clean_text": _class_text(sample.get("clean_pred_name"), sample.get("clean_pred"),
                                      sample.get("clean_conf")),
            "adv_text": _class_text(sample.get("adv_pred_name"), sample.get("adv_pred"), sample.get("adv_conf")),
            "distance_text": fmt.joined(
                f"L2 {fmt.num(l2)}" if l2 is not None else no_adv,
                f"L∞ {fmt.num(sample['linf'])}" if sample.get("linf") is not None else None,
                f"{fmt.integer(queries)} queries" if queries is not None else None),
        }

    def decorate(self, gallery: Gallery, data: dict[str, torch.Tensor], class_names: list[str]) -> None:
        """Add what the arrays hold beyond the images to the cards (nothing for classification)."""

    def plot(self, data: dict[str, torch.Tensor], title: str) -> Plot | None:
        """The L2-vs-queries plot when both trace tensors are there; None otherwise or on bad shapes."""
        tq, tl = data.get("trace_queries"), data.get("trace_l2")
        if not isinstance(tq, torch.Tensor) or not isinstance(tl, torch.Tensor):
            return None
        try:
            uri = l2_vs_queries_uri(tq, tl, title)
        except (ValueError, IndexError, RuntimeError):
            return None
        return Plot(uri, "L2 distance vs. model queries", "Thin lines: each image's current adversarial; bold: "
                    "median over images at equal query budget (drawn once most images have one).")


# a task's report view, by task name (third-party tasks add theirs through the "advlab.views" group)
VIEWS = Catalog("view", group="advlab.views", builtin=())


def register_view(cls: type[TaskView]) -> type[TaskView]:
    VIEWS.add(cls.task, cls())
    return cls


def view_for(row: dict[str, Any]) -> TaskView:
    """The view of a results row: by its `task`, classification when it has none (or an unknown one)."""
    task = str(row.get("task") or "classification")
    return (VIEWS.get(task) if task in VIEWS else VIEWS.get("classification")).obj


def task_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """The extra summary columns of every task present among the rows, in order of first appearance."""
    seen: list[TaskView] = []
    for row in rows:
        view = view_for(row)
        if view not in seen:
            seen.append(view)
    return [column for view in seen for column in view.columns]


def _active_plot(data: dict[str, torch.Tensor], title: str, targets: str) -> Plot | None:
    """DAG's share of still-active targets per image against iterations, when the arrays hold it."""
    trace = data.get("trace_active")
    if not isinstance(trace, torch.Tensor):
        return None
    try:
        uri = active_share_uri(trace, title)
    except (ValueError, IndexError, RuntimeError):
        return None
    return Plot(uri, f"Share of {targets} still active vs. iterations", "Thin lines: each image; bold: median over "
                f"images. DAG stops an image once fewer than 1% of its {targets} are active.")


def _dense_distance(sample: dict[str, Any]) -> str:
    """'rms 1.2e-02 · L∞ 0.08 · 150 iterations' for a DAG sample (segmentation, detection)."""
    queries = sample.get("queries")
    return fmt.joined(f"rms {fmt.sci(sample.get('rms'))}", f"L∞ {fmt.num(sample.get('linf'))}",
                      f"{fmt.integer(queries)} iterations" if queries is not None else None)


def _css(rgb: torch.Tensor) -> str:
    """(3,) colour in [0, 1] -> '#rrggbb'."""
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgb)


def _class_text(name: Any, index: Any, conf: Any = None) -> str:
    """'bull mastiff #243 (91.0%)' from whichever parts are present."""
    label = f"{name} #{index}" if name not in (None, "") and index is not None else name if name else index
    return fmt.joined(label, f"({fmt.pct(conf)})" if conf is not None else None, sep=" ")


register_view(TaskView)


@register_view
class SegmentationView(TaskView):
    """Per-pixel shares on the cards, reference / clean / adversarial label maps with a legend, and the
    share of active target pixels against iterations (DAG, Xie et al. 2017)."""

    task = "segmentation"
    columns = (
        Column("mIoU clean → adv.", lambda r: f"{fmt.pct(r.get('miou_clean'))} → {fmt.pct(r.get('miou_adv'))}"),
        Column("target hit rate", lambda r: fmt.pct(r.get("target_hit_rate"))),
        Column("changed pixels hit", lambda r: fmt.pct(r.get("changed_hit_rate")),
               "over the pixels whose target differs from the reference"),
        Column("object pixels hit", lambda r: fmt.pct(r.get("foreground_hit_rate")),
               "over the pixels whose reference class is not background (what DAG's stop rule counts)"),
        Column("rms", lambda r: fmt.sci(r.get("rms_perturbation"))),
        Column("median iterations", lambda r: fmt.integer(r.get("iterations_median"))),
    )
    MAPS: ClassVar[tuple[tuple[str, str], ...]] = (("reference", "reference"), ("clean prediction", "pred_clean"),
                                                   ("adversarial prediction", "pred_adv"))

    def card_text(self, sample: dict[str, Any], l2: Any, no_adv: str | None) -> dict[str, str]:
        return {
            "label_text": "per-pixel masks below",
            "clean_text": f"pixel accuracy {fmt.pct(sample.get('pixel_acc_clean'))}",
            "adv_text": f"pixel accuracy {fmt.pct(sample.get('pixel_acc_adv'))}, targets hit "
                        f"{fmt.pct(sample.get('target_hit'))}",
            "distance_text": _dense_distance(sample),
        }

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
        gallery.legend = [(class_names[k] if k < len(class_names) else str(k), _css(colours[k]))
                          for k in sorted(shown) if 0 <= k < count]

    def plot(self, data: dict[str, torch.Tensor], title: str) -> Plot | None:
        return _active_plot(data, title, "target pixels")


@register_view
class DetectionView(TaskView):
    """Reference boxes and the clean and adversarial detections drawn with class names and scores, mAP
    clean -> adversarial, and the share of active targets against iterations (DAG, Xie et al. 2017)."""

    task = "detection"
    columns = (
        Column("mAP@0.5 clean → adv.", lambda r: f"{fmt.pct(r.get('map50_clean'))} → {fmt.pct(r.get('map50_adv'))}"),
        Column("COCO mAP clean → adv.", lambda r: f"{fmt.pct(r.get('map_clean'))} → {fmt.pct(r.get('map_adv'))}",
               "mAP averaged over IoU 0.5:0.95"),
        Column("targets at adv. label", lambda r: fmt.pct(r.get("target_hit_rate")),
               "share of the target proposals at their adversarial label"),
        Column("targets flipped", lambda r: fmt.pct(r.get("flipped_rate")),
               "share of the target proposals no longer predicted as their reference class"),
        Column("objects found clean → adv.", lambda r: _found(r),
               "reference objects still detected (same class, IoU >= 0.5) at the detector's score threshold, "
               "and at half of it after the attack"),
        Column("rms", lambda r: fmt.sci(r.get("rms_perturbation"))),
        Column("median iterations", lambda r: fmt.integer(r.get("iterations_median"))),
    )
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
            "distance_text": _dense_distance(sample),
        }

    def decorate(self, gallery: Gallery, data: dict[str, torch.Tensor], class_names: list[str]) -> None:
        keys = [f"{prefix}_{part}" for _, prefix, _ in self.DRAWINGS for part in ("boxes", "labels", "scores")]
        if not all(isinstance(data.get(k), torch.Tensor) for k in keys):
            return
        colours = palette(max(len(class_names), int(max(int(data[k].max()) for k in keys[1::3])) + 1))
        css = [_css(rgb) for rgb in colours]
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
                                    [css[k] for k in labels[keep].tolist()])
                card.figures.append((caption, image_uri(drawn)))
        gallery.legend = [(class_names[k] if k < len(class_names) else str(k), css[k]) for k in sorted(shown)]

    def plot(self, data: dict[str, torch.Tensor], title: str) -> Plot | None:
        return _active_plot(data, title, "target proposals")


def _found(row: dict[str, Any]) -> str:
    """'100% → 0% (3% at 0.25)': objects found at the detector's threshold, clean and adversarial, and at half."""
    if row.get("found_clean") is None:
        return "—"
    return (f"{fmt.pct(row.get('found_clean'))} → {fmt.pct(row.get('found_adv'))} "
            f"({fmt.pct(row.get('found_adv_lower'))} at {row.get('lower_threshold'):g})")
