"""One attack's arrays file -> image cards (original, adversarial, perturbation) and the trace plot;
what is task-specific comes from the view of the row's task (`advlab.view.task_view`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from advlab.core.norms import MEASURES
from advlab.report.views import view_for
from advlab.view.cards import Gallery, SampleCard
from advlab.view.images import amplified_perturbation, image_uri
from advlab.view.task_view import TaskView

MAX_IMAGES = 12


def _status(sample: dict[str, Any], view: TaskView, universal: bool = False,
            control: bool = False) -> tuple[str, str]:
    """(css class, text) for a sample's outcome, in the words of its task's view; for a universal
    perturbation: whether the predicted label changed (one perturbation for all images, so 'not
    fooled' is no failure); on a control row (a random baseline) an image the control leaves alone is
    what the control is for, so it is shown as kept, not as a failure."""
    if universal and sample.get("clean_pred") is not None and sample.get("adv_pred") is not None:
        if sample["adv_pred"] != sample["clean_pred"]:
            return "success", "fooled (label changed)"
        return "kept", "not fooled"
    if sample.get("attacked") is False:
        outcome = "skipped"
    else:
        outcome = {True: "success", False: "failed"}.get(sample.get("success"), "unknown")
    if control and outcome == "failed":
        return "kept", view.status[outcome]
    return outcome, view.status[outcome]


def sample_card(sample: dict[str, Any], index: int, l2_fallback: float | None = None,
                universal: bool = False, view: TaskView | None = None, control: bool = False) -> SampleCard:
    """The text parts of a card from one entry of `samples` (images are added by the caller)."""
    view = view or view_for({})
    status, status_text = _status(sample, view, universal, control)
    l2 = sample.get("l2", l2_fallback)
    no_adv = "no adversarial" if status in ("failed", "skipped") and l2 is None else None
    text = view.card_text(sample, l2, no_adv)
    return SampleCard(name=str(sample.get("name") or f"image {index}"), status=status, status_text=status_text,
                      **text)


def resolve_arrays(run_dir: Path, rel: Any) -> Path | None:
    """The arrays file named in results.json, if it lies inside the run directory."""
    if not isinstance(rel, str) or not rel:
        return None
    root = run_dir.resolve()
    path = (root / rel).resolve()
    return path if path.is_relative_to(root) else None


def locate(run_dir: Path, rel: Any, what: str) -> tuple[Path | None, str | None]:
    """(path, None) for a file results.json names inside the run directory, else (None, what is wrong:
    it lies outside the run directory, or it is missing)."""
    path = resolve_arrays(run_dir, rel)
    if path is None:
        return None, f"{what} {rel} lies outside the run directory"
    if not path.is_file():
        return None, f"{what} {rel} is missing"
    return path, None


def read_images(run_dir: Path, rel: Any, what: str, keys: tuple[str, ...],
                missing: str | None) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """(tensors, None) from the file `rel` of the run directory holding matching (N, C, H, W) image
    tensors under `keys`, or (None, the note saying why not: never recorded (`missing`), outside the run
    directory, gone, unreadable). Both galleries (attacks, defenses) read their images through it."""
    if not rel:
        return None, missing
    path, why = locate(run_dir, rel, what)
    if path is None:
        return None, f"{why}: images are not shown."
    try:
        return load_images_file(path, keys), None
    except Exception as exc:  # any unreadable file: report it, render the rest
        return None, f"{what} {rel} could not be read ({type(exc).__name__}: {exc}): images are not shown."


def load_images_file(path: Path, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """torch.load a dict whose `keys` are matching (N, C, H, W) tensors, on the CPU; raises on anything
    unusable."""
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict):
        raise ValueError("not a dict")
    tensors = [data.get(k) for k in keys]
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise ValueError(f"no {' / '.join(repr(k) for k in keys)} tensors")
    if tensors[0].ndim != 4 or any(t.shape != tensors[0].shape for t in tensors):
        shapes = ", ".join(f"{k} {tuple(t.shape)}" for k, t in zip(keys, tensors))
        raise ValueError(f"{shapes} are not matching (N,C,H,W)")
    return data


def build_gallery(run_dir: Path, attack: dict[str, Any], title: str = "", universal: bool = False,
                  class_names: list[str] | None = None) -> Gallery:
    """Cards for up to MAX_IMAGES samples plus the trace plot; never raises on bad arrays."""
    samples = [s if isinstance(s, dict) else {} for s in (attack.get("samples") or [])]
    view = view_for(attack)
    control = bool(attack.get("baseline"))
    gallery = Gallery(n_total=len(samples))
    data, gallery.note = read_images(run_dir, attack.get("arrays"), "Arrays file", ("x", "x_adv"),
                                     missing="No arrays file was recorded for this attack: images are not shown.")

    if data is None:
        gallery.cards = [sample_card(s, i, universal=universal, view=view, control=control)
                         for i, s in enumerate(samples[:MAX_IMAGES])]
        return gallery

    x, x_adv = data["x"], data["x_adv"]
    n = x.shape[0]
    stored = data.get("n_images")  # the row's image count; arrays keep only the first ones
    total = int(stored) if isinstance(stored, torch.Tensor) and stored.numel() == 1 else n
    gallery.n_total = max(total, int(attack.get("samples_total") or len(samples)))
    stored = data.get("dist_l2")  # measured once by the run; arrays written before it was stored: measured here
    l2_all = stored if isinstance(stored, torch.Tensor) and stored.shape == (n,) else MEASURES["l2"].distance(x, x_adv)
    pert = amplified_perturbation(x[:MAX_IMAGES], x_adv[:MAX_IMAGES])
    for i in range(min(n, MAX_IMAGES)):
        sample = samples[i] if i < len(samples) else {}
        card = sample_card(sample, i, l2_fallback=float(l2_all[i]), universal=universal, view=view,
                           control=control)
        card.orig_uri, card.adv_uri = image_uri(x[i]), image_uri(x_adv[i])
        card.pert_uri = image_uri(pert[i], lossless=True)  # amplified: every level is the perturbation
        gallery.cards.append(card)
    view.decorate(gallery, data, class_names or [])
    plot = view.plot(data, title)
    if plot is not None:
        gallery.plot_uri, gallery.plot_title, gallery.plot_caption = plot.uri, plot.title, plot.caption
    if len(samples) and attack.get("samples_total", len(samples)) != total:
        gallery.note = f"results.json lists {len(samples)} samples but the arrays hold {total} images."
    return gallery
