"""`TaskView`: a task's part of the report. Every task (`advlab.tasks`) carries one, and the report
asks a row's task for it, so the report itself never names a task.

A view gives the summary table's task columns and their glossary, the words on an image card and
its status badge, what the arrays hold beyond the images drawn under each card (label maps, boxes),
and the trace plot. This base is what any task gets without a view of its own: success rate and
queries, distances on the cards, the L2-vs-queries plot when the arrays hold its traces.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from advlab.view import fmt
from advlab.view.cards import Gallery
from advlab.view.plots import active_share_uri, l2_vs_queries_uri


@dataclass(frozen=True)
class Column:
    """A summary column of a task: its header, how a row's cell reads, the header's tooltip, and the
    row key it `needs` (the column is left out where no row of the table has that key)."""

    header: str
    cell: Callable[[dict[str, Any]], str]
    title: str = ""
    needs: str | None = None

    def shown(self, rows: list[dict[str, Any]]) -> bool:
        return self.needs is None or any(self.needs in row for row in rows)


@dataclass(frozen=True)
class Plot:
    uri: str
    title: str
    caption: str


def success_rate(row: dict[str, Any]) -> str:
    return fmt.pct(row.get("success_rate"))


def before_after(clean: str, adv: str) -> Callable[[dict[str, Any]], str]:
    """A cell '55.8% → 9.4%' from a row's clean and adversarial values of one score."""
    return lambda row: f"{fmt.pct(row.get(clean))} → {fmt.pct(row.get(adv))}"


class TaskView:
    """The report's view of rows of a task that brings no view of its own."""

    label: ClassVar[str] = "attacks"  # the summary table's heading
    score_label: ClassVar[str] = "score"  # the task's headline number, as the header names it (e.g. "mIoU")
    class_noun: ClassVar[str] = "classes"  # what the model's class names are, in the header ("4 classes")
    right: ClassVar[str] = "by the task's own per-image test"  # when one image counts as right (the matrix's verdict)
    columns: ClassVar[tuple[Column, ...]] = (
        Column("success rate", success_rate),
        Column("median queries", lambda r: fmt.integer(r.get("queries_median"))),
    )
    glossary: ClassVar[tuple[tuple[str, str], ...]] = (
        ("success rate", "share of the attacked images on which the attack succeeded, by the task's own test."),
        ("median queries", "model queries (forward passes per image) the attack used, median over images."),
    )
    # the badge of a card: (css class, text) per outcome
    status: ClassVar[dict[str, str]] = {"success": "adversarial found", "failed": "attack FAILED",
                                        "skipped": "not attacked", "unknown": "outcome not recorded"}
    # the badge of a defense gallery card: is the image right again after the defense?
    defense_status: ClassVar[dict[str, str]] = {"success": "right again after the defense",
                                                "failed": "still wrong after the defense",
                                                "unknown": "outcome not recorded"}

    def card_text(self, sample: dict[str, Any], l2: Any, no_adv: str | None) -> dict[str, str]:
        """label_text, clean_text, adv_text and distance_text of one card."""
        return {"label_text": "", "clean_text": "", "adv_text": "", "distance_text": distance_text(sample, l2, no_adv)}

    def defense_text(self, row: dict[str, Any]) -> dict[str, str]:
        """label_text, clean_text, adv_text and denoised_text of a defense gallery card (one record)."""
        return {"label_text": "", "clean_text": "", "adv_text": "", "denoised_text": ""}

    def restored(self, row: dict[str, Any]) -> bool | None:
        """Whether a defense gallery image is right again after the defense (None: not recorded)."""
        value = row.get("restored")
        return value if isinstance(value, bool) else None

    def decorate(self, gallery: Gallery, data: dict[str, torch.Tensor], class_names: list[str]) -> None:
        """Add what the arrays hold beyond the images to the cards (nothing here)."""

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


def distance_text(sample: dict[str, Any], l2: Any, no_adv: str | None) -> str:
    """'L2 1.2 · L∞ 0.03 · 5000 queries' from whichever parts a sample has."""
    queries = sample.get("queries")
    return fmt.joined(f"L2 {fmt.num(l2)}" if l2 is not None else no_adv,
                      f"L∞ {fmt.num(sample['linf'])}" if sample.get("linf") is not None else None,
                      f"{fmt.integer(queries)} queries" if queries is not None else None)


# columns of every iterative dense attack's rows (e.g. DAG): the paper's perceptibility, and its iterations
RMS = Column("rms", lambda r: fmt.sci(r.get("rms_perturbation")))
MEDIAN_ITERATIONS = Column("median iterations", lambda r: fmt.integer(r.get("iterations_median")))


def dense_distance(sample: dict[str, Any]) -> str:
    """'rms 1.2e-02 · L∞ 0.08 · 150 iterations' for an iterative dense attack's sample (e.g. DAG)."""
    queries = sample.get("queries")
    return fmt.joined(f"rms {fmt.sci(sample.get('rms'))}", f"L∞ {fmt.num(sample.get('linf'))}",
                      f"{fmt.integer(queries)} iterations" if queries is not None else None)


def active_plot(data: dict[str, torch.Tensor], title: str, targets: str) -> Plot | None:
    """The share of still-active targets per image against iterations, when the arrays hold it."""
    trace = data.get("trace_active")
    if not isinstance(trace, torch.Tensor):
        return None
    try:
        uri = active_share_uri(trace, title)
    except (ValueError, IndexError, RuntimeError):
        return None
    return Plot(uri, f"Share of {targets} still active vs. iterations", "Thin lines: each image; bold: median over "
                f"images. The attack stops an image once fewer than 1% of its {targets} are active.")


def css(rgb: torch.Tensor) -> str:
    """(3,) colour in [0, 1] -> '#rrggbb'."""
    return "#" + "".join(f"{round(float(c) * 255):02x}" for c in rgb)


def class_text(name: Any, index: Any, conf: Any = None) -> str:
    """'bull mastiff #243 (91.0%)' from whichever parts are present."""
    label = f"{name} #{index}" if name not in (None, "") and index is not None else name if name else index
    return fmt.joined(label, f"({fmt.pct(conf)})" if conf is not None else None, sep=" ")
