"""Defenses on the report page: per defense, accuracy with no defense vs. defended (non-adaptive: examples
made on the bare model, then defended, the setting of Liao et al. CVPR 2018) vs. defended under an
adaptive attack (run end to end on the defended model; BPDA with the identity for non-differentiable
defenses, Athalye et al. ICML 2018), and an image gallery: clean, adversarial, denoised, removed noise."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlab.core.norms import MEASURES
from advlab.report.gallery import MAX_IMAGES, read_images
from advlab.report.views import view_for
from advlab.view import fmt
from advlab.view.images import amplified_perturbation, image_uri
from advlab.view.task_view import TaskView

MIN_SIDE = 112  # small images (28x28) are enlarged with nearest-neighbour so that their pixels are visible
ADAPTIVE_SUFFIX = "(adaptive)"

GRADIENT_NOTES = {
    "exact": "Adaptive attacks used exact gradients through the defense (backpropagation through the "
             "differentiable defense and the model).",
    "bpda": "Adaptive attacks used BPDA: identity backward pass through the non-differentiable defense "
            "(Athalye et al. 2018); the forward pass applies the defense as is.",
}


@dataclass
class DefenseRow:
    """One line of a defense's accuracy table (all cells formatted)."""

    key: str
    no_defense: str
    non_adaptive: str
    adaptive: str
    effect: str  # defended (non-adaptive) - no defense, in percentage points
    gap: str  # defended non-adaptive - defended adaptive, in percentage points
    clean: bool = False


@dataclass
class DefenseCard:
    """One gallery row: four images side by side with their captions; *_uri are None without the file."""

    name: str
    attack: str
    label_text: str
    clean_text: str
    adv_text: str
    denoised_text: str
    status: str  # "success" (defense restored the label) | "failed" | "unknown"
    status_text: str
    adv_l2: str = fmt.MISSING
    removed_l2: str = fmt.MISSING
    removed_max: str = fmt.MISSING  # max |x_adv - denoised|: the panel is amplified to it (a tiny offset looks full)
    clean_uri: str | None = None
    adv_uri: str | None = None
    denoised_uri: str | None = None
    removed_uri: str | None = None


@dataclass
class DefenseView:
    """Everything the page shows about one entry of results.json's `defenses`."""

    anchor: str
    title: str
    info: list[tuple[str, str]]
    params: list[tuple[str, str]]
    rows: list[DefenseRow]
    gradient_note: str | None
    attack_links: list[tuple[str, str]] = field(default_factory=list)  # (anchor, text)
    cards: list[DefenseCard] = field(default_factory=list)
    gallery_note: str | None = None
    gallery_total: int = 0


@dataclass
class DefenseTable:
    """The overview table of several defenses: one row per defense, one accuracy column per attack key."""

    columns: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    model_column: bool = False




def _pp(a: Any, b: Any) -> str:
    """a - b for two rates in [0, 1], in percentage points: '+73.0 pp'; MISSING when either is absent."""
    x, y = fmt.finite(a), fmt.finite(b)
    return fmt.MISSING if x is None or y is None else f"{(x - y) * 100:+.1f} pp"


def _after(d: dict[str, Any]) -> dict[str, Any]:
    """accuracy_after_defense as a dict (an old run may hold one number)."""
    after = d.get("accuracy_after_defense")
    if isinstance(after, dict):
        return after
    return {"accuracy": after} if after is not None else {}


def split_key(key: Any) -> tuple[str, bool]:
    """('pgd', True) for 'pgd(adaptive)' or 'pgd (adaptive)'; ('pgd-1', False) for 'pgd-1'."""
    text = str(key)
    if text.endswith(ADAPTIVE_SUFFIX) and text[: -len(ADAPTIVE_SUFFIX)].strip():
        return text[: -len(ADAPTIVE_SUFFIX)].rstrip(), True
    return text, False


def gradient_kind(d: dict[str, Any]) -> str | None:
    """'exact', 'bpda', another recorded value, or None when the run does not say."""
    grad = d.get("adaptive_gradient")
    if grad not in (None, ""):
        return str(grad)
    if d.get("differentiable") is True:
        return "exact"
    if d.get("differentiable") is False:
        return "bpda"
    return None


def accuracy_rows(d: dict[str, Any]) -> list[DefenseRow]:
    """The clean row, then one row per attack key of accuracy_without_defense / accuracy_after_defense."""
    without, after = fmt.as_dict(d.get("accuracy_without_defense")), _after(d)
    plain: dict[str, Any] = {}
    adaptive: dict[str, Any] = {}
    keys: list[str] = []
    for k in without:
        if str(k) not in keys:
            keys.append(str(k))
    for k, v in after.items():
        base, is_adaptive = split_key(k)
        (adaptive if is_adaptive else plain)[base] = v
        if base not in keys:
            keys.append(base)
    without = {str(k): v for k, v in without.items()}
    rows = [DefenseRow(
        key="clean (no attack)",
        no_defense=fmt.pct(d.get("clean_accuracy_undefended")),
        non_adaptive=fmt.pct(d.get("clean_accuracy")),
        adaptive=fmt.pct(d.get("clean_accuracy")),
        effect=_pp(d.get("clean_accuracy"), d.get("clean_accuracy_undefended")),
        gap=fmt.MISSING,
        clean=True,
    )]
    for key in keys:
        rows.append(DefenseRow(
            key=key,
            no_defense=fmt.pct(without.get(key)),
            non_adaptive=fmt.pct(plain.get(key)),
            adaptive=fmt.pct(adaptive.get(key)),
            effect=_pp(plain.get(key), without.get(key)),
            gap=_pp(plain.get(key), adaptive.get(key)),
        ))
    return rows


def _same(a: Any, b: Any) -> bool:
    """Whether a recorded value matches (a missing value on either side matches anything)."""
    return a in (None, "") or b in (None, "") or str(a) == str(b)


def attack_links(d: dict[str, Any], attacks: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(anchor, text) of the attack rows run against this defense (their `defense` names its method)."""
    links = []
    for i, a in enumerate(attacks):
        defense = a.get("defense")
        name = defense.get("method") if isinstance(defense, dict) else defense
        if not name or str(name) != str(d.get("method")):
            continue
        if not (_same(a.get("defense_variant"), d.get("variant")) and _same(a.get("model"), d.get("model"))):
            continue
        adaptive = a.get("adaptive")
        links.append((f"attack-{i}", fmt.joined(
            a.get("method"), f"adaptive: {fmt.plain(adaptive)}" if adaptive else "non-adaptive",
            f"accuracy {fmt.pct(a['accuracy'])}" if a.get("accuracy") is not None else None, sep=", ")))
    return links


def _measured(data: dict[str, torch.Tensor], key: str, norm: str, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(k,) distances the run stored under `key`; measured here only for gallery files written before
    the run stored them."""
    stored = data.get(key)
    if isinstance(stored, torch.Tensor) and stored.shape[:1] == a.shape[:1]:
        return stored
    return MEASURES[norm].distance(a, b)


def gallery_card(row: dict[str, Any], index: int, view: TaskView) -> DefenseCard:
    """The text parts of one gallery card, in its task's words (images are added by the caller)."""
    restored = view.restored(row)
    status = {True: "success", False: "failed", None: "unknown"}[restored]
    return DefenseCard(name=str(row.get("name") or f"image {index}"), attack=fmt.plain(row.get("attack")),
                       status=status, status_text=view.defense_status[status], **view.defense_text(row))


def build_gallery(run_dir: Path, gallery: Any, view: TaskView) -> tuple[list[DefenseCard], str | None, int]:
    """(cards, note, number of rows) for a defense's `gallery`; never raises on a bad or missing file."""
    gallery = fmt.as_dict(gallery)
    listed = gallery.get("rows") if isinstance(gallery.get("rows"), list) else []
    rows = [r if isinstance(r, dict) else {} for r in listed]
    data, note = read_images(run_dir, gallery.get("file"), "Gallery file", ("x", "x_adv", "denoised"),
                             missing="No gallery file was recorded for this defense: images are not shown."
                             if rows else None)
    if data is None:
        return [gallery_card(r, i, view) for i, r in enumerate(rows[:MAX_IMAGES])], note, len(rows)

    x, x_adv, denoised = data["x"], data["x_adv"], data["denoised"]
    n = x.shape[0]
    k = min(n, MAX_IMAGES)
    removed = amplified_perturbation(denoised[:k], x_adv[:k])  # x_adv - denoised, gray = nothing removed
    adv_l2 = _measured(data, "dist_l2", "l2", x[:k], x_adv[:k])
    removed_l2 = _measured(data, "removed_l2", "l2", denoised[:k], x_adv[:k])
    removed_max = _measured(data, "removed_linf", "linf", denoised[:k], x_adv[:k])
    cards = []
    for i in range(k):
        card = gallery_card(rows[i] if i < len(rows) else {}, i, view)
        card.clean_uri = image_uri(x[i], MIN_SIDE)
        card.adv_uri = image_uri(x_adv[i], MIN_SIDE)
        card.denoised_uri = image_uri(denoised[i], MIN_SIDE)
        card.removed_uri = image_uri(removed[i], MIN_SIDE, lossless=True)  # amplified
        card.adv_l2, card.removed_l2 = fmt.num(float(adv_l2[i])), fmt.num(float(removed_l2[i]))
        card.removed_max = fmt.num(float(removed_max[i]))
        cards.append(card)
    if rows and len(rows) != n:
        note = f"results.json lists {len(rows)} gallery rows but the gallery file holds {n} images."
    return cards, note, max(n, len(rows))


def defense_view(run_dir: Path, d: dict[str, Any], index: int, attacks: list[dict[str, Any]]) -> DefenseView:
    """The section of one defense."""
    title = fmt.joined(d.get("method"), d.get("variant"), sep=" — ")
    if d.get("model") not in (None, ""):
        title += f" ({fmt.plain(d['model'])})"
    rows = accuracy_rows(d)
    grad = gradient_kind(d)
    has_adaptive = any(r.adaptive != fmt.MISSING for r in rows if not r.clean)
    if grad is not None:
        note = GRADIENT_NOTES.get(grad.lower(), f"Gradient used by the adaptive attacks: {grad}.")
    else:
        note = "The gradient used by the adaptive attacks was not recorded." if has_adaptive else None
    info = [(label, value) for label, value in (
        ("method", fmt.plain(d.get("method"))),
        ("variant", fmt.plain(d.get("variant"))),
        ("model", fmt.plain(d["model"]) if d.get("model") not in (None, "") else None),
        ("differentiable", fmt.plain(d["differentiable"]) if d.get("differentiable") is not None else None),
        ("adaptive gradient", grad),
    ) if value is not None]
    cards, gallery_note, total = build_gallery(run_dir, d.get("gallery"), view_for(d))
    return DefenseView(
        anchor=f"defense-{index}",
        title=title,
        info=info,
        params=[(str(k), fmt.plain(v)) for k, v in fmt.as_dict(d.get("params")).items()],
        rows=rows,
        gradient_note=note,
        attack_links=attack_links(d, attacks),
        cards=cards,
        gallery_note=gallery_note,
        gallery_total=total,
    )


def defense_views(run_dir: Path, defenses: Any, attacks: list[dict[str, Any]]) -> list[DefenseView]:
    """One view per dict entry of results.json's `defenses` (anything else is skipped)."""
    entries = defenses if isinstance(defenses, list) else []
    return [defense_view(run_dir, d, i, attacks) for i, d in enumerate(entries) if isinstance(d, dict)]


def defense_table(defenses: Any) -> DefenseTable:
    """The overview table; each key of accuracy_after_defense becomes a column."""
    table = DefenseTable()
    for index, d in enumerate(defenses if isinstance(defenses, list) else []):
        if not isinstance(d, dict):
            continue
        after = _after(d)
        for key in after:
            if str(key) not in table.columns:
                table.columns.append(str(key))
        table.model_column = table.model_column or d.get("model") not in (None, "")
        table.rows.append({
            "anchor": f"defense-{index}",
            "method": fmt.plain(d.get("method")),
            "variant": fmt.plain(d.get("variant")),
            "model": fmt.plain(d.get("model")),
            "clean_accuracy": fmt.pct(d.get("clean_accuracy")),
            "after": {str(k): fmt.pct(v) for k, v in after.items()},
        })
    return table
