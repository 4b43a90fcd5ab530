"""Universal adversarial perturbations (Moosavi-Dezfooli et al., CVPR 2017) on the report page:
the perturbation image, its norms and fooling ratios per attack row, and the transfer table
(a perturbation computed on one model, evaluated on another: the paper's Table 2)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from advlab.report.gallery import locate
from advlab.view import fmt
from advlab.view.images import data_uri
from advlab.view.plots import fooling_trace_png, transfer_heatmap_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PNG_BYTES = 4 * 1024 * 1024  # a perturbation image larger than this is not inlined


@dataclass
class UniversalView:
    """What the page shows about one universal-perturbation row (all text already formatted)."""

    image_uri: str | None = None
    image_note: str | None = None
    file: str | None = None
    l2: str = fmt.MISSING
    linf: str = fmt.MISSING
    fooling_train: str = fmt.MISSING
    fooling_heldout: str | None = None
    eval_rows: list[tuple[str, str]] = field(default_factory=list)
    trace_uri: str | None = None
    baseline: str | None = None


@dataclass
class TransferCell:
    text: str
    diagonal: bool = False
    missing: bool = False


@dataclass
class TransferView:
    """The transfer table: one row per perturbation, one column per evaluated model."""

    eval_data: str
    models: list[str]
    rows: list[tuple[str, str, list[TransferCell]]]  # (label, file, cells)
    heatmap_uri: str | None
    has_missing: bool
    title: str = "Transfer of universal perturbations"
    description: str = ("Fooling ratio of each universal perturbation (rows) on each model (columns); bold: the "
                        "model the perturbation was computed on (Moosavi-Dezfooli et al. 2017, Table 2).")



def is_universal(attack: dict[str, Any]) -> bool:
    """Whether a results.json attack row holds a universal perturbation (the keys its rows carry)."""
    return any(attack.get(k) is not None for k in ("perturbation_png", "perturbation_file", "fooling_trace",
                                                   "fooling_ratio_train"))


def perturbation_image(run_dir: Path, rel: Any) -> tuple[str | None, str | None]:
    """(data URI, None) for the PNG file `rel` inside the run directory, else (None, why not)."""
    if not rel:
        return None, None
    path, why = locate(run_dir, rel, "Perturbation image")
    if path is None:
        return None, f"{why}: not shown."
    try:
        if path.stat().st_size > MAX_PNG_BYTES:
            return None, f"Perturbation image {rel} is larger than {MAX_PNG_BYTES // 2**20} MiB: not inlined."
        png = path.read_bytes()
    except OSError as exc:
        return None, f"Perturbation image {rel} could not be read ({type(exc).__name__})."
    if not png.startswith(PNG_SIGNATURE):
        return None, f"Perturbation image {rel} is not a PNG file."
    return data_uri(png), None


def _trace(values: Any) -> list[float]:
    """fooling_trace as floats (null and non-numbers -> NaN)."""
    if not isinstance(values, list):
        return []
    return [v if (v := fmt.finite(x)) is not None else float("nan") for x in values]


def universal_view(run_dir: Path, attack: dict[str, Any], title: str = "") -> UniversalView | None:
    """The universal-perturbation block of one attack row; None for other attacks."""
    if not is_universal(attack):
        return None
    ev = attack.get("eval") if isinstance(attack.get("eval"), dict) else None
    uri, note = perturbation_image(run_dir, attack.get("perturbation_png"))
    view = UniversalView(
        image_uri=uri,
        image_note=note,
        file=str(attack["perturbation_file"]) if attack.get("perturbation_file") else None,
        l2=fmt.num(attack.get("perturbation_l2")),
        linf=fmt.num(attack.get("perturbation_linf")),
        fooling_train=fmt.pct(attack.get("fooling_ratio_train")),
        baseline=str(attack["baseline"]) if attack.get("baseline") else None,
    )
    if ev is not None:
        view.fooling_heldout = fmt.pct(ev.get("fooling_ratio", attack.get("fooling_ratio")))
        view.eval_rows = [
            ("held-out data", fmt.joined(ev.get("data"), f"n = {fmt.integer(ev['n'])}" if ev.get("n") is not None
                                         else None)),
            ("fooling ratio (held-out)", view.fooling_heldout),
            ("clean accuracy (held-out)", fmt.pct(ev.get("clean_accuracy"))),
            ("accuracy with perturbation (held-out)", fmt.pct(ev.get("accuracy"))),
        ]
    trace = _trace(attack.get("fooling_trace"))
    png = fooling_trace_png(np.asarray(trace), title) if len(trace) >= 2 else None
    view.trace_uri = data_uri(png) if png is not None else None
    return view


def _label(pert: Any, index: int) -> tuple[str, str]:
    """('UAP of mobilenet_v2 (sgd)', file) for one entry of transfer.perturbations."""
    pert = pert if isinstance(pert, dict) else {}
    if pert.get("label"):
        return fmt.plain(pert["label"]), str(pert.get("file") or "")
    model = fmt.plain(pert.get("model")) if pert.get("model") is not None else f"perturbation {index + 1}"
    solver = f" ({fmt.plain(pert['solver'])})" if pert.get("solver") is not None else ""
    return f"UAP of {model}{solver}", str(pert.get("file") or "")


def transfer_view(transfer: Any) -> TransferView | None:
    """The transfer section from results.json's `transfer`; None when there is nothing to show."""
    if not isinstance(transfer, dict):
        return None
    models = [fmt.plain(m) for m in transfer["models"]] if isinstance(transfer.get("models"), list) else []
    matrix = transfer.get("matrix") if isinstance(transfer.get("matrix"), list) else []
    perts = transfer.get("perturbations") if isinstance(transfer.get("perturbations"), list) else []
    if not models or not matrix:
        return None
    rows, values, diagonal, labels = [], [], [], []
    clean = transfer.get("clean")
    if isinstance(clean, list) and len(clean) == len(models):  # the scores without perturbation, for reference
        nums = [fmt.finite(v) for v in clean]
        rows.append(("no perturbation (clean)", "", [TransferCell(fmt.pct(v), missing=v is None) for v in nums]))
        values.append([float("nan") if v is None else v for v in nums])
        diagonal.append([False] * len(models))
        labels.append("clean")
    for i, line in enumerate(matrix):
        line = line if isinstance(line, list) else []
        source = perts[i].get("model") if i < len(perts) and isinstance(perts[i], dict) else None
        label, file = _label(perts[i] if i < len(perts) else None, i)
        cells, nums, diag = [], [], []
        for j, model in enumerate(models):
            v = fmt.finite(line[j]) if j < len(line) else None
            same = source is not None and fmt.plain(source) == model
            cells.append(TransferCell(fmt.pct(v), diagonal=same, missing=v is None))
            nums.append(float("nan") if v is None else v)
            diag.append(same)
        rows.append((label, file, cells))
        values.append(nums)
        diagonal.append(diag)
        labels.append(label)
    png = transfer_heatmap_png(np.asarray(values), labels, models, np.asarray(diagonal))
    texts = {k: fmt.plain(transfer[k]) for k in ("title", "description") if transfer.get(k)}
    return TransferView(
        eval_data=fmt.plain(transfer.get("eval_data")) if transfer.get("eval_data") is not None else "",
        models=models,
        rows=rows,
        heatmap_uri=data_uri(png) if png is not None else None,
        has_missing=any(c.missing for _, _, cells in rows for c in cells),
        **texts,
    )
