"""Defenses in the runner. Each defense goes in front of each model and is evaluated against every
attack of the run in three settings, side by side:

- no defense: the attack's accuracy on the bare model;
- non-adaptive: the examples made on the bare model, classified through the defense (the setting
  of Liao et al., CVPR 2018, and of most defense papers);
- adaptive: the attack run end to end on `Defended(model, defense)` (exact gradients through a
  differentiable defense, BPDA with the identity through a non-differentiable one: Athalye,
  Carlini & Wagner, ICML 2018; Athalye & Carlini, arXiv 1804.03286, for HGD).
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from advlab.core import atomic
from advlab.core.config import DefenseSpec, RunConfig
from advlab.core.defense import Defended, Defense
from advlab.core.norms import MEASURES
from advlab.core.registry import get_attack, get_defense
from advlab.core.schema import ADAPTIVE, NON_ADAPTIVE
from advlab.core.settings import instantiate
from advlab.run.randomised import clean_shares, prediction_count, right_shares
from advlab.run.robustness import Column, Ledger, entry
from advlab.run.rows import BareRow, Outcome, RowContext, attack_row
from advlab.run.sanity import PROBE_IMAGES
from advlab.tasks import HeldOut, Subject

log = logging.getLogger("advlab")
GALLERY_PER_ATTACK = 3  # image rows per attack in the report: clean, adversarial, denoised, removed noise


def build_defense(spec: DefenseSpec) -> Defense:
    """Instantiate a registered defense; bad or missing settings become one line naming the setting."""
    return instantiate("defense", spec.method, get_defense(spec.method).cls, spec.params)


def defense_label(defense: Defense) -> str:
    """The defense as the robustness matrix names it: its method and settings, e.g. 'bit-depth 2 bits'."""
    variant = defense.variant()
    return f"{defense.name} {variant}" if variant else defense.name


def evaluate_defense(index: int, spec: DefenseSpec, defense: Defense, subject: Subject,
                     bare: list[BareRow], cfg: RunConfig,
                     device: torch.device, arrays: Path, context: RowContext = RowContext(),
                     ledger: Ledger | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The defense row and its adaptive attack rows. `bare` holds, per attack of the run, its row on the
    bare model. Scores are the task's headline number
    (accuracy for classifiers), under the schema's accuracy keys. With a `ledger`, the per-image
    verdicts of both settings go into it under the attacks' labels."""
    defended = Defended(subject.model, defense).to(device).eval()
    task, data, labels = subject.task, subject.data, subject.labels
    clean = task.predict(defended, data.images, cfg.batch_size, device)
    held = subject.held_out
    held_def = HeldOut(held.data, task.predict(defended, held.data.images, cfg.batch_size, device)) if held else None
    defended_subject = Subject(defended, task, data, clean, labels, held_def,
                               prediction_count(defended, data.images[:PROBE_IMAGES].to(device)))
    adaptive_context = replace(context, setting="defended model (adaptive)", defense=defense.name,
                               defense_variant=defense.variant(), adaptive=defended.adaptive_gradient)
    row: dict[str, Any] = {
        **defense.describe(), "task": task.name, "adaptive_gradient": defended.adaptive_gradient,
        **({"model": context.model} if context.model is not None else {}),
        "clean_accuracy": task.score(clean, labels),
        "clean_accuracy_undefended": task.score(subject.clean, labels),
        "accuracy_without_defense": {}, "accuracy_after_defense": {},
    }
    adaptive_rows: list[dict[str, Any]] = []
    gallery: list[tuple[str, Outcome, Any, torch.Tensor, torch.Tensor | None]] = []
    bare_right = task.correct(subject.clean, labels)  # (N,) or None: the gallery shows images an attack turned
    clean_correct = clean_shares(defended_subject, cfg.batch_size, device) if ledger is not None else None
    columns = {s: Column(context.model, defense_label(defense), s) for s in (NON_ADAPTIVE, ADAPTIVE)}
    if clean_correct is not None:
        ledger.add_column(columns[NON_ADAPTIVE], clean_correct)
        if spec.adaptive:
            ledger.add_column(columns[ADAPTIVE], clean_correct)
    for b in bare:
        key, tag, attack_spec, attack, outcome = b.label, b.tag, b.spec, b.attack, b.outcome
        threat = get_attack(attack_spec.method).threat
        after = task.predict(defended, outcome.x_adv, cfg.batch_size, device)
        after_right = task.correct(after, labels)  # (N,) right after the defense, or None without a verdict
        if clean_correct is not None:
            shares = right_shares(task, defended, outcome.x_adv, labels, defended_subject.predictions,
                                  cfg.batch_size, device, first=after) if defended_subject.predictions > 1 else None
            ledger.record(columns[NON_ADAPTIVE], key, entry(shares[0] if shares is not None else after_right,
                                                            outcome.dist, attack_spec, attack, threat))
        row["accuracy_without_defense"][key] = task.score(outcome.adv, labels)
        row["accuracy_after_defense"][key] = task.score(after, labels)
        turned = outcome.won if bare_right is None else bare_right & ~task.correct(outcome.adv, labels)
        gallery.append((key, outcome, after, turned, after_right))
        if spec.adaptive:
            adaptive_outcome = attack_row(f"{tag}-d{index}", attack_spec, attack, b.companion, defended_subject, cfg,
                                          device, arrays, adaptive_context)
            adaptive = adaptive_outcome.row
            adaptive_rows.append(adaptive)
            if clean_correct is not None:
                assert adaptive_outcome.right is not None  # the task has a verdict: it gave clean_correct
                ledger.record(columns[ADAPTIVE], key, entry(adaptive_outcome.right, adaptive_outcome.dist,
                                                            attack_spec, attack, threat))
            row["accuracy_after_defense"][f"{key}(adaptive)"] = adaptive[task.score_name]
        log.info("%s on %s: %s accuracy %.3f undefended, %.3f non-adaptive%s", defense.name, subject.model.name, key,
                 row["accuracy_without_defense"][key], row["accuracy_after_defense"][key],
                 f", {row['accuracy_after_defense'][key + '(adaptive)']:.3f} adaptive" if spec.adaptive else "")
    row["gallery"] = _gallery(index, defended, subject, gallery, device, arrays)
    return row, adaptive_rows


def _gallery(index: int, defended: Defended, subject: Subject,
             per_attack: list[tuple[str, Outcome, Any, torch.Tensor, torch.Tensor | None]], device: torch.device,
             arrays: Path) -> dict[str, Any]:
    """A few images per attack that the attack turned from right to wrong on the bare model (by the
    task's verdict; where it has none, those the attack fooled): clean, adversarial, and the defense's
    output (the report shows the removed noise x_adv - x'), with the task's words for each and
    `restored`: right again after the defense, by the task's verdict."""
    rows: list[dict[str, Any]] = []
    x, x_adv, purified, dist = [], [], [], []
    for key, outcome, after, turned, after_right in per_attack:
        pick = turned.nonzero().squeeze(1)[:GALLERY_PER_ATTACK]
        if pick.numel() == 0:
            continue
        with torch.no_grad():
            out = defended.purify(outcome.x_adv[pick].to(device)).cpu()
        x.append(subject.data.images[pick])
        x_adv.append(outcome.x_adv[pick])
        purified.append(out)
        dist.append(outcome.dist["l2"][pick])  # (k,) the adversarial's distance, as measured for its row
        records = subject.task.defense_records(subject, pick, outcome.adv, after)
        rows += [{"attack": key, "name": subject.data.names[j], **record,
                  **({} if after_right is None else {"restored": bool(after_right[j])})}
                 for j, record in zip(pick.tolist(), records)]
    if not rows:
        return {"file": None, "rows": []}
    arrays.mkdir(parents=True, exist_ok=True)
    path = arrays / f"defense-{index}-gallery.pt"
    x_adv_all, denoised = torch.cat(x_adv), torch.cat(purified)
    atomic.save_tensors({"x": torch.cat(x), "x_adv": x_adv_all, "denoised": denoised, "dist_l2": torch.cat(dist),
                         **{f"removed_{norm}": MEASURES[norm].distance(denoised, x_adv_all) for norm in ("l2", "linf")}},
                        path)
    return {"file": f"arrays/{path.name}", "rows": rows}
