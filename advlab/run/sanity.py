"""Sanity checks that flag a suspicious evaluation (results' "warnings", a box at the top of the report).

A robustness number is only as good as the attacks behind it. These checks follow Carlini et al.,
"On Evaluating Adversarial Robustness" (arXiv 1902.06705, 2019) and Athalye, Carlini & Wagner,
"Obfuscated Gradients Give a False Sense of Security" (ICML 2018):

- `probe` looks at a model as the attacks see it (the bare model, or a defended one in the adaptive
  setting): two identical forward passes that differ (a randomised model: use EOT), outputs that are
  probabilities rather than logits, no gradient path at all (`gradients_blocked`: the runner then skips
  the white-box attacks, with a row that says why), zero / NaN input gradients, and an unbounded attack
  (eps = 1) that does not drive accuracy to about 0;
- `result_checks` reads the per-image outcomes of the run (`advlab.run.robustness.Ledger`) and its rows:
  a transfer attack (made on the bare model) succeeding where the white-box attack failed, or a
  decision- or score-based attack succeeding within a threat model where every gradient attack of
  that threat model failed (gradient masking suspected: AutoAttack's own check), accuracy that does
  not fall as eps grows, and a random-noise control about as strong as the attack.

Each warning is {"check", "where", "message", "advice"}.
"""
from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from advlab.core.criteria import Untargeted
from advlab.core.randomness import passes_differ
from advlab.core.registry import ATTACKS
from advlab.core.schema import ADAPTIVE, NON_ADAPTIVE
from advlab.core.threat import ThreatModel
from advlab.run.robustness import Column, Ledger, accuracy, eps_curves
from advlab.tasks import Task
from advlab.view import fmt

PROBE_IMAGES = 8  # images each model probe looks at
GRADIENTS_BLOCKED = ("not run: the model's output has no gradient with respect to its input (a forward under "
                     "torch.no_grad(), a detach or a non-differentiable op); use a decision- or score-based attack")
MASKED_SHARE = 0.1  # zero / NaN gradients on at least this share of images is flagged
GAP = 0.05  # accuracy gaps below this are noise, not a finding
LARGE_LINF = 0.3  # an l_inf eps this large should leave about no accuracy
NEAR_ZERO = 0.05


def warning(check: str, where: str, message: str, advice: str) -> dict[str, str]:
    return {"check": check, "where": where, "message": message, "advice": advice}


# ---------------------------------------------------------------- model probes
def probe(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, where: str, device: torch.device, *,
          task: Task | None = None) -> list[dict[str, str]]:
    """Checks on `model` with a few of its images x (N, C, H, W) and reference labels (N, ...);
    with a `task` that has a per-image verdict (`Task.correct`), also the unbounded-attack check."""
    x, labels = x[:PROBE_IMAGES].to(device), labels[:PROBE_IMAGES].to(device)
    if x.shape[0] == 0:
        return []
    found = []
    if passes_differ(model, x):
        found.append(warning("randomised-model", where, "two identical forward passes give different outputs: the "
                             "model or defense is randomised, so one gradient sample is a noisy estimate",
                             "average gradients over several passes (Expectation over Transformation, Athalye et "
                             "al. 2018): set eot_samples (e.g. 10) on fgsm, pgd, apgd, fab-t and square; standard "
                             "switches to AutoAttack's rand version (EOT over 20 passes) by itself"))
    with torch.no_grad():
        first = model(x).float()
    if bool((first >= 0).all()) and bool(torch.allclose(first.sum(1), torch.ones_like(first.sum(1)), atol=1e-3)):
        found.append(warning("probabilities", where, "the model returns probabilities (non-negative, summing to 1), "
                             "not logits: cross-entropy on them saturates and gradient attacks weaken",
                             "return the logits (drop the final softmax), or use loss: margin"))
    if gradients_blocked(model, x):
        found.append(warning("gradients-blocked", where, "the model's output does not depend differentiably on its "
                             "input (a forward under torch.no_grad(), a detach, or a non-differentiable op): "
                             "white-box gradient attacks cannot run on it, and their rows say so",
                             "use decision- or score-based attacks (boundary, square), or make the forward "
                             "differentiable (BPDA for a non-differentiable preprocessing)"))
        return found
    share_masked = _masked_gradient_share(model, x, labels)
    if share_masked >= MASKED_SHARE:
        found.append(warning("masked-gradients", where, f"the input gradient of the loss is zero or not finite on "
                             f"{share_masked:.0%} of {x.shape[0]} probed images: gradient attacks cannot move",
                             "attack through BPDA (bpda: true on non-differentiable defenses), or trust the "
                             "decision-based and transfer rows here rather than the gradient ones"))
    if task is not None:
        left = _unbounded_accuracy(model, x, labels, task)
        if left is not None and left > NEAR_ZERO:
            found.append(warning("unbounded-attack", where, f"an unbounded PGD (l_inf eps 1, 10 steps) leaves "
                                 f"accuracy {left:.2f} on the probed images; with any image reachable it should "
                                 f"be about 0", "suspect gradient masking or a bug in the model or defense; check "
                                 "the gradients, and try BPDA, EOT or a decision-based attack"))
    return found


def gradients_blocked(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether no gradient path leads from the input to the model's logits (one forward on one image); False
    for a model whose output is not a tensor of logits (a detector's gradients flow through its box head)."""
    probe_x = x[:1].detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = model(probe_x)
    return isinstance(out, torch.Tensor) and not out.requires_grad


def _masked_gradient_share(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> float:
    probe_x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        loss = Untargeted(labels).loss(model(probe_x).float())
        if not loss.requires_grad:
            return 1.0  # no path from the input to the loss at all
        (grad,) = torch.autograd.grad(loss.sum(), probe_x, allow_unused=True)
    if grad is None:
        return 1.0
    norms = grad.flatten(1).norm(dim=1)
    return float((~torch.isfinite(norms) | (norms <= 1e-12)).float().mean())


def _unbounded_accuracy(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, task: Task) -> float | None:
    """Share of the images the model gets right (the task's per-image verdict) that an l_inf eps 1
    gradient attack (the catalog's first with `probe_settings`: PGD, 10 steps) leaves right (None if
    none is right, or no attack offers a probe); no random start, which alone (noise anywhere in [0, 1])
    would fool a model whose gradients are masked."""
    entry = ATTACKS.find(lambda e: getattr(e.cls, "probe_settings", None) is not None)
    if entry is None:
        return None
    reference = labels.cpu()
    right = task.correct(task.predict(model, x, len(x), x.device), reference)  # (N,) on the CPU
    if right is None or not bool(right.any()):
        return None
    keep = right.nonzero().squeeze(1)  # on the CPU, as the task's verdicts are
    here = keep.to(x.device)
    result = entry.cls(**entry.cls.probe_settings)(model, x[here], Untargeted(labels[here]))
    after = task.correct(task.predict(model, result.x_adv, len(keep), x.device), reference[keep])
    return float(after.float().mean())


# ---------------------------------------------------------------- result checks
def result_checks(ledger: Ledger, rows: list[dict[str, Any]],
                  threats: list[ThreatModel] | None = None) -> list[dict[str, str]]:
    """Checks on a run's outcomes; `threats`: its threat models (None: the ones its bounded attacks define)."""
    return (_transfer_beats_adaptive(ledger) + _search_beats_gradient(ledger, threats or ledger.threats())
            + _curves(ledger) + _controls(rows) + _score_after_gradients(rows))


def _transfer_beats_adaptive(ledger: Ledger) -> list[dict[str, str]]:
    found = []
    for column in ledger.columns:
        if column.setting != NON_ADAPTIVE:
            continue
        adaptive = Column(column.model, column.defense, ADAPTIVE)
        for label, entry in ledger.entries[column].items():
            if entry.threat != "white-box" or label not in ledger.entries.get(adaptive, {}):
                continue
            transfer, direct = accuracy(ledger, column, [label]), accuracy(ledger, adaptive, [label])
            if transfer < direct - GAP:
                found.append(warning("gradient-masking", adaptive.label(),
                                     f"{label}: examples made on the bare model leave accuracy {transfer:.2f} on "
                                     f"the defended model, the same attack run through the defense {direct:.2f}; "
                                     f"a white-box attack should do at least as well as a transfer attack",
                                     "the defense likely masks gradients: attack through BPDA, add EOT if it is "
                                     "randomised, and report the worse of both settings"))
    return found


def _search_beats_gradient(ledger: Ledger, threats: list[ThreatModel]) -> list[dict[str, str]]:
    """AutoAttack's own check (Croce & Hein, ICML 2020): within a threat model, a score- or decision-based
    attack fooling images that every white-box gradient attack of that threat model left right means the
    gradients did not find what is there (masked, obfuscated, or a weak attack)."""
    found = []
    for threat in threats:
        within = ledger.within(threat)
        for column in within.columns:
            entries, clean = within.entries[column], within.clean[column]
            gradient = [label for label, e in entries.items()
                        if e.threat == "white-box" and e.per_image and threat.contains(e.bound)]
            if not gradient:
                continue
            survived = clean >= 0.5  # (N,) bool: right in most predictions (always, for a deterministic model)
            for label in gradient:
                survived &= entries[label].correct >= 0.5
            for label, e in entries.items():
                if e.threat not in ("decision", "score"):
                    continue
                beaten = survived & (e.correct < 0.5)
                share = float(beaten.float().sum() / clean.sum().clamp_min(1))
                if share > GAP and int(beaten.sum()) >= 2:
                    found.append(warning("gradient-masking", column.label(),
                                         f"{label} ({e.threat}-based) fooled {share:.0%} of the images within "
                                         f"{threat.label()} that every gradient attack there left right "
                                         f"({', '.join(gradient)})",
                                         "gradients are likely masked or obfuscated, or the gradient attacks are too "
                                         "weak: try BPDA, EOT, APGD with more iterations or restarts, and report the "
                                         "worst case over attacks"))
    return found


def _curves(ledger: Ledger) -> list[dict[str, str]]:
    found = []
    for curve in eps_curves(ledger):
        points = curve["points"]
        where = f"{curve['column']}: {curve['attack']}"
        for (e0, a0), (e1, a1) in itertools.pairwise(points):
            if a1 is not None and a0 is not None and a1 > a0 + GAP:
                found.append(warning("non-monotone", where, f"accuracy rises from {a0:.2f} to {a1:.2f} as eps grows "
                                     f"from {e0:.4g} to {e1:.4g}; a stronger budget can never help the model",
                                     "the attack is not converging: more steps, restarts or a smaller step size; "
                                     "or gradients are masked"))
                break
        eps, acc = points[-1]
        if curve["setting"] == NON_ADAPTIVE:  # examples made on another model need not reach 0 here
            continue
        if curve["norm"] == "linf" and eps >= LARGE_LINF and acc is not None and acc > NEAR_ZERO:
            found.append(warning("no-zero-at-large-eps", where, f"accuracy is still {acc:.2f} at l_inf eps {eps:.4g}, "
                                 "where any image can be turned into any other",
                                 "suspect gradient masking or a bug; check gradients, try BPDA or a decision-based "
                                 "attack"))
    return found


def _score_after_gradients(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """AutoAttack's warning: inside one sequence, the score-based component fooled images that the gradient
    components before it left right."""
    found = []
    for row in rows:
        for part in row.get("components") or []:
            if part.get("threat") == "score" and part.get("fooled"):
                where = fmt.row_column(row)
                found.append(warning("gradient-masking", where, f"{row['method']}: {part['attack']} (score-based) "
                                     f"fooled {part['fooled']} images that the gradient attacks before it left right",
                                     "the gradients are likely masked or obfuscated: trust the score-based result, "
                                     "and attack through BPDA or with EOT"))
    return found


def _controls(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    found = []
    for control in (r for r in rows if r.get("baseline")):
        for row in rows:
            same = all(row.get(k) == control.get(k) for k in ("method", "defense", "setting", "model"))
            if not same or row.get("baseline") or row is control:
                continue
            measure = "fooling_ratio" if row.get("fooling_ratio") is not None else "success_rate"
            ours, theirs = row.get(measure), control.get(measure)
            if ours and theirs is not None and theirs >= 0.8 * ours:
                found.append(warning("control-as-strong", row.get("setting", ""),
                                     f"{row['method']}: the random-noise control reaches {measure} {theirs:.2f}, "
                                     f"the attack {ours:.2f}; the attack adds little over noise of the same size",
                                     "check the attack's settings (budget, steps), and whether the model is simply "
                                     "fragile to noise"))
    return found
