"""Universal perturbations in the runner (the universal attack's row hooks): held-out fooling
ratios, the saved perturbation (.pt and PNG), and the transfer matrix across models
(Moosavi-Dezfooli et al., CVPR 2017, Table 2: a UAP computed on one model, evaluated on another)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from advlab.attacks.universal import load_perturbation, perturbation_png, save_perturbation
from advlab.core.attack import Attack
from advlab.core.images import Mapped
from advlab.tasks import HeldOut, Subject
from advlab.tasks.classification import predict
from advlab.zoo.wrappers import ImageClassifier


def apply_perturbation(model: ImageClassifier, held: HeldOut, v: torch.Tensor, batch_size: int,
                       device: torch.device) -> dict[str, Any]:
    """Fooling ratio (predicted label changes vs the clean prediction) and accuracy of x + v."""
    v = v.cpu()
    x_adv = Mapped(held.data.images, lambda x: (x + v[None]).clamp_(0.0, 1.0))  # (N, C, H, W), streamed
    adv = predict(model, x_adv, batch_size, device)
    labeled = held.data.y >= 0
    out: dict[str, Any] = {"data": held.data.source, "n": len(held.data),
                           "fooling_ratio": float((adv.label != held.clean.label).float().mean())}
    if bool(labeled.any()):
        y = held.data.y[labeled]
        out["clean_accuracy"] = float((held.clean.label[labeled] == y).float().mean())
        out["accuracy"] = float((adv.label[labeled] == y).float().mean())
    return out


def universal_summary(tag: str, attack: Attack, extras: dict[str, torch.Tensor], model: ImageClassifier,
                      held_out: HeldOut | None, row: dict[str, Any], batch_size: int, device: torch.device,
                      arrays: Path) -> dict[str, Any]:
    """Extra result keys of a universal row; saves the perturbation next to the arrays."""
    v = extras["perturbation"].float().cpu()  # (C, H, W)
    arrays.mkdir(parents=True, exist_ok=True)
    meta = {"model": model.name, "weights": model.weights, "params": repr(attack.params())}
    save_perturbation(arrays / f"{tag}.perturbation.pt", v, meta)
    perturbation_png(arrays / f"{tag}.perturbation.png", v)
    out: dict[str, Any] = {
        "perturbation_file": f"arrays/{tag}.perturbation.pt", "perturbation_png": f"arrays/{tag}.perturbation.png",
        "perturbation_l2": float(v.norm()), "perturbation_linf": float(v.abs().max()),
        "fooling_ratio_train": row["fooling_ratio"],
    }
    if "fooling_trace" in extras:
        out["fooling_trace"] = [float(f) for f in extras["fooling_trace"]]
    if held_out is not None:
        evaluation = apply_perturbation(model, held_out, v, batch_size, device)
        out["eval"] = evaluation
        out["fooling_ratio"] = evaluation["fooling_ratio"]
        if "accuracy" in evaluation:
            out["accuracy"] = evaluation["accuracy"]
    return out


def transfer_matrix(subjects: list[Subject], sources: list[tuple[int, dict[str, Any]]], run_dir: Path,
                    batch_size: int, device: torch.device) -> dict[str, Any]:
    """matrix[i][j]: fooling ratio on model j (on its held-out data, else its attacked data) of the
    i-th universal perturbation (made on model sources[i][0]); None where the input sizes differ."""
    targets = [(s.model, s.held_out_or_data()) for s in subjects]
    matrix = []
    for _, row in sources:
        v, _meta = load_perturbation(run_dir / row["perturbation_file"])
        line = []
        for model, held in targets:
            fits = tuple(v.shape) == tuple(held.data.images.shape[1:])
            line.append(apply_perturbation(model, held, v, batch_size, device)["fooling_ratio"] if fits else None)
        matrix.append(line)
    return {"eval_data": targets[0][1].data.source, "models": [m.name for m, _ in targets],
            "perturbations": [{"model": targets[m][0].name, "solver": row["params"].get("solver"),
                               "file": row["perturbation_file"]} for m, row in sources],
            "matrix": matrix}
