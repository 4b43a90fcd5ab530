"""One attack's arrays file -> image cards (original, adversarial, perturbation) and the trace plot."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlab.report import fmt
from advlab.report.images import amplified_perturbation, image_uri, mask_image, palette
from advlab.report.plots import active_share_uri, l2_vs_queries_uri

MAX_IMAGES = 12


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
    masks: list[tuple[str, str]] = field(default_factory=list)  # segmentation: (caption, label-map image URI)


@dataclass
class Gallery:
    """The image grid and trace plot of one attack, with a note when something is missing."""

    cards: list[SampleCard] = field(default_factory=list)
    note: str | None = None
    plot_uri: str | None = None
    plot_title: str = "L2 distance vs. model queries"
    n_total: int = 0
    legend: list[tuple[str, str]] = field(default_factory=list)  # segmentation: (class name, css colour)


def _class_text(name: Any, index: Any, conf: Any = None) -> str:
    """'bull mastiff #243 (91.0%)' from whichever parts are present."""
    label = f"{name} #{index}" if name not in (None, "") and index is not None else name if name else index
    return fmt.joined(label, f"({fmt.pct(conf)})" if conf is not None else None, sep=" ")


def _status(sample: dict[str, Any], universal: bool = False) -> tuple[str, str]:
    """(css class, text) for a sample's outcome; for a universal perturbation: whether the
    predicted label changed (one perturbation for all images, so 'not fooled' is no failure)."""
    if universal and sample.get("clean_pred") is not None and sample.get("adv_pred") is not None:
        if sample["adv_pred"] != sample["clean_pred"]:
            return "success", "fooled (label changed)"
        return "kept", "not fooled"
    if sample.get("attacked") is False:
        return "skipped", "not attacked (misclassified when clean)"
    success = sample.get("success")
    if success is True:
        return "success", "adversarial found"
    if success is False:
        return "failed", "attack FAILED"
    return "unknown", "outcome not recorded"


def sample_card(sample: dict[str, Any], index: int, l2_fallback: float | None = None,
                universal: bool = False) -> SampleCard:
    """The text parts of a card from one entry of `samples` (images are added by the caller)."""
    status, status_text = _status(sample, universal)
    l2 = sample.get("l2", l2_fallback)
    queries = sample.get("queries")
    no_adv = "no adversarial" if status in ("failed", "skipped") and l2 is None else None
    if "target_hit" in sample:  # a segmentation sample: shares of pixels, not labels
        return SampleCard(
            name=str(sample.get("name") or f"image {index}"), status=status, status_text=status_text,
            label_text="per-pixel masks below",
            clean_text=f"pixel accuracy {fmt.pct(sample.get('pixel_acc_clean'))}",
            adv_text=f"pixel accuracy {fmt.pct(sample.get('pixel_acc_adv'))}, targets hit "
                     f"{fmt.pct(sample.get('target_hit'))}",
            distance_text=fmt.joined(f"rms {fmt.sci(sample.get('rms'))}", f"L∞ {fmt.num(sample.get('linf'))}",
                                     f"{fmt.integer(queries)} iterations" if queries is not None else None))
    distance = fmt.joined(
        f"L2 {fmt.num(l2)}" if l2 is not None else no_adv,
        f"L∞ {fmt.num(sample['linf'])}" if sample.get("linf") is not None else None,
        f"{fmt.integer(queries)} queries" if queries is not None else None,
    )
    return SampleCard(
        name=str(sample.get("name") or f"image {index}"),
        status=status,
        status_text=status_text,
        label_text=_class_text(sample.get("label_name"), sample.get("label")),
        clean_text=_class_text(sample.get("clean_pred_name"), sample.get("clean_pred"), sample.get("clean_conf")),
        adv_text=_class_text(sample.get("adv_pred_name"), sample.get("adv_pred"), sample.get("adv_conf")),
        distance_text=distance,
    )


def resolve_arrays(run_dir: Path, rel: Any) -> Path | None:
    """The arrays file named in results.json, if it lies inside the run directory."""
    if not isinstance(rel, str) or not rel:
        return None
    root = run_dir.resolve()
    path = (root / rel).resolve()
    return path if path.is_relative_to(root) else None


def load_arrays(path: Path) -> dict[str, torch.Tensor]:
    """torch.load the arrays dict on the CPU (tensors only); raises on anything unusable."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError("not a dict")
    x, x_adv = data.get("x"), data.get("x_adv")
    if not isinstance(x, torch.Tensor) or not isinstance(x_adv, torch.Tensor):
        raise ValueError("no 'x' / 'x_adv' tensors")
    if x.ndim != 4 or x.shape != x_adv.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_adv {tuple(x_adv.shape)} are not matching (N,C,H,W)")
    return data


def _trace_plot(data: dict[str, torch.Tensor], title: str) -> str | None:
    """The L2-vs-queries plot when both trace tensors are there; None otherwise or on bad shapes."""
    tq, tl = data.get("trace_queries"), data.get("trace_l2")
    if not isinstance(tq, torch.Tensor) or not isinstance(tl, torch.Tensor):
        return None
    try:
        return l2_vs_queries_uri(tq, tl, title)
    except (ValueError, IndexError, RuntimeError):
        return None


def _add_masks(gallery: Gallery, data: dict[str, torch.Tensor], class_names: list[str]) -> None:
    """Reference, clean and adversarial label maps under each card, and a legend of the classes shown."""
    maps = {key: data.get(key) for key in ("reference", "pred_clean", "pred_adv")}
    if not all(isinstance(m, torch.Tensor) and m.dim() == 3 for m in maps.values()):
        return
    count = max(len(class_names), int(max(int(m[m != 255].max()) if (m != 255).any() else 0
                                           for m in maps.values())) + 1)
    colours = palette(count)
    shown: set[int] = set()
    for i, card in enumerate(gallery.cards):
        if i >= maps["pred_adv"].shape[0]:
            break
        for caption, key in (("reference", "reference"), ("clean prediction", "pred_clean"),
                             ("adversarial prediction", "pred_adv")):
            labels = maps[key][i].long()
            shown |= set(labels.unique().tolist())
            card.masks.append((caption, image_uri(mask_image(labels, colours), min_side=96)))
    gallery.legend = [(class_names[k] if k < len(class_names) else str(k),
                       "#" + "".join(f"{int(round(float(c) * 255)):02x}" for c in colours[k]))
                      for k in sorted(shown) if 0 <= k < count]


def _active_plot(trace: torch.Tensor, title: str) -> str | None:
    try:
        return active_share_uri(trace, title)
    except (ValueError, IndexError, RuntimeError):
        return None


def build_gallery(run_dir: Path, attack: dict[str, Any], title: str = "", universal: bool = False,
                  class_names: list[str] | None = None) -> Gallery:
    """Cards for up to MAX_IMAGES samples plus the trace plot; never raises on bad arrays."""
    samples = [s if isinstance(s, dict) else {} for s in (attack.get("samples") or [])]
    rel = attack.get("arrays")
    gallery = Gallery(n_total=len(samples))
    data: dict[str, torch.Tensor] | None = None
    if not rel:
        gallery.note = "No arrays file was recorded for this attack: images are not shown."
    else:
        path = resolve_arrays(run_dir, rel)
        if path is None or not path.is_file():
            gallery.note = f"Arrays file {rel} is missing: images are not shown."
        else:
            try:
                data = load_arrays(path)
            except Exception as exc:  # any unreadable file: report it, render the rest
                gallery.note = f"Arrays file {rel} could not be read ({type(exc).__name__}: {exc}): images are not shown."

    if data is None:
        gallery.cards = [sample_card(s, i, universal=universal) for i, s in enumerate(samples[:MAX_IMAGES])]
        return gallery

    x, x_adv = data["x"], data["x_adv"]
    n = x.shape[0]
    stored = data.get("n_images")  # the row's image count; arrays keep only the first ones
    total = int(stored) if isinstance(stored, torch.Tensor) and stored.numel() == 1 else n
    gallery.n_total = max(total, int(attack.get("samples_total") or len(samples)))
    l2_all = (x_adv.double() - x.double()).flatten(1).norm(dim=1)
    pert = amplified_perturbation(x[:MAX_IMAGES], x_adv[:MAX_IMAGES])
    for i in range(min(n, MAX_IMAGES)):
        sample = samples[i] if i < len(samples) else {}
        card = sample_card(sample, i, l2_fallback=float(l2_all[i]), universal=universal)
        card.orig_uri, card.adv_uri, card.pert_uri = image_uri(x[i]), image_uri(x_adv[i]), image_uri(pert[i])
        gallery.cards.append(card)
    if isinstance(data.get("pred_adv"), torch.Tensor):
        _add_masks(gallery, data, class_names or [])
    gallery.plot_uri = _trace_plot(data, title)
    if gallery.plot_uri is None and isinstance(data.get("trace_active"), torch.Tensor):
        gallery.plot_uri = _active_plot(data["trace_active"], title)
        gallery.plot_title = "Share of target pixels still active vs. iterations"
    if len(samples) and attack.get("samples_total", len(samples)) != total:
        gallery.note = f"results.json lists {len(samples)} samples but the arrays hold {total} images."
    return gallery
