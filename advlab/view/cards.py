"""What the page shows of one attack's images: a card per image and the gallery that holds them."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SampleCard:
    """What the page shows for one image; the *_uri fields are None without arrays."""

    name: str
    status: str  # "success" | "failed" | "skipped" | "unknown" | "kept" (universal: not fooled)
    status_text: str
    label_text: str
    clean_text: str
    adv_text: str
    distance_text: str
    orig_uri: str | None = None
    adv_uri: str | None = None
    pert_uri: str | None = None
    figures: list[tuple[str, str]] = field(default_factory=list)  # the task's drawings: (caption, image URI)


@dataclass
class Gallery:
    """The image grid and trace plot of one attack, with a note when something is missing."""

    cards: list[SampleCard] = field(default_factory=list)
    note: str | None = None
    plot_uri: str | None = None
    plot_title: str = ""
    plot_caption: str = ""
    n_total: int = 0
    legend: list[tuple[str, str]] = field(default_factory=list)  # classes drawn: (class name, css colour)
