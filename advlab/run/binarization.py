"""The binarization test of an attack row (Zimmermann, Brendel, Tramèr & Carlini, "Increasing Confidence in
Adversarial Robustness Evaluations", NeurIPS 2022): the same attack, with the same settings, against the
binarized models (`advlab.core.binarized`) of the first images the row's model classifies right, in the
row's own setting (an adaptive row's binarized models have the defense in front, attacked as the row
attacked it: exact gradients, BPDA, or none).

Each binarized model has an adversarial example inside the threat model by construction, so a strong
attack fools nearly all of them. The pass rule is the paper's: the attack succeeds on at least 95% of the
binarized models that were built (a readout that does not separate its own training points, or a
binarized model that does not call its clean image class 0 and its boundary point class 1, is a setup
failure and counts in neither direction). A failing test means the row's robust accuracy is not to be
trusted: the attack missed adversarial examples known to exist.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.core.attack import Attack
from advlab.core.binarized import Binarized, binarize, check_head, head_of, inner_count, separated
from advlab.core.config import AttackSpec
from advlab.core.criteria import Untargeted
from advlab.core.defense import Defended
from advlab.core.threat import ThreatModel
from advlab.run.chunks import attack_in_chunks
from advlab.tasks import Subject
from advlab.view import fmt

log = logging.getLogger("advlab")
PASS_RATE = 0.95  # Zimmermann et al. 2022: the test passes at an attack success rate of at least 95%
CANDIDATES = 4  # right images read per wanted image, to find enough whose eps balls are disjoint
ADVICE = ("the attack missed adversarial examples that exist inside the threat model, so the robust accuracy it "
          "reports overstates the model's: make the attack stronger for this model before trusting the number "
          "(more steps and restarts, a correct step size, BPDA through a non-differentiable defense, EOT over a "
          "randomised one, a loss that does not saturate; Zimmermann et al. 2022 list what fixed each defense they "
          "re-evaluated), and run the test again")


def bare_classifier(model: nn.Module) -> nn.Module:
    """The classifier whose head is replaced: the model itself, or the one behind a defense."""
    return model.model if isinstance(model, Defended) else model


def check_binarizable(model: nn.Module, x: torch.Tensor) -> None:
    """Before a run writes anything: the model is a classifier whose last linear layer gives its logits."""
    classifier = bare_classifier(model)
    check_head(model, head_of(classifier, len(classifier.class_names)), x)


def threat_of_test(attack: Attack, threats: list[ThreatModel]) -> ThreatModel | None:
    """The threat model the test builds its binarized models in: the attack's own bound, else the run's first."""
    bound = attack.bound()
    if bound is not None:
        return ThreatModel(*bound)
    return threats[0] if threats else None


def binarization_test(attack: Attack, spec: AttackSpec, subject: Subject, *, images: int,
                      threats: list[ThreatModel], seed: int, batch_size: int, device: torch.device,
                      chunk_dir: Path) -> dict[str, Any]:
    """The row's `binarization_test`: success_rate, n (binarized models attacked), passed (the paper's rule),
    and how they were built; or `skipped`, why the test does not apply to this row."""
    threat = threat_of_test(attack, threats)
    if spec.target_class is not None:
        return {"skipped": "the test is untargeted (an adversarial example of each binarized model is known to "
                           "exist, not one of a given class)"}
    if attack.universal:
        return {"skipped": "a universal perturbation is one for all images; the test gives each image its own model"}
    if threat is None:
        return {"skipped": "the attack has no bound and the run names no threat model (--threat) to build in"}
    x, binarized, valid, inner, build_s = binarized_models(subject, threat, images, seed, batch_size, device)
    kept = x[valid]  # (n_valid, C, H, W)
    run = attack_in_chunks(attack, binarized, kept, Untargeted(torch.zeros(len(kept), dtype=torch.long)),
                           starting_points=None, batch_size=batch_size, device=device, seed=seed, chunk_dir=chunk_dir)
    fooled = run.success & threat.within(run.distances[threat.norm])  # (n_valid,) within the test's threat model
    n = len(kept)
    rate = float(fooled.float().mean()) if n else None
    return {"success_rate": rate, "n": n, "passed": (rate >= PASS_RATE) if rate is not None else None,
            "pass_rate": PASS_RATE, "setup_failed": int((~valid).sum()), "threat": threat.as_dict(),
            "inner_points": inner, "build_s": build_s, "wall_s": run.wall_s}


def binarized_models(subject: Subject, threat: ThreatModel, images: int, seed: int, batch_size: int,
                     device: torch.device) -> tuple[torch.Tensor, Binarized, torch.Tensor, int, float]:
    """(the test's images (n, C, H, W), their binarized models, (n,) valid, inner points per image, seconds it
    took) for this subject and threat model: built once, then reused by every attack row of the subject."""
    key = ("binarized", threat, images, seed)
    if key not in subject.built:
        started = time.perf_counter()
        right = subject.task.correct(subject.clean, subject.labels).cpu()  # (N,) bool
        candidates = right.nonzero().squeeze(1)[:CANDIDATES * images]
        x = subject.data.images[candidates].to(device)  # (M, C, H, W)
        x = x[separated(x.cpu(), threat, images).to(device)]  # (n, C, H, W), eps balls disjoint
        classifier = bare_classifier(subject.model)
        head = head_of(classifier, len(classifier.class_names))
        inner = inner_count(head.in_features)
        log.info("binarization test: %d binarized models of %s in %s, from %d forward passes", len(x),
                 getattr(subject.model, "name", "the model"), threat.label(), len(x) * (inner + 1))
        binarized, valid = binarize(subject.model, head, x, threat, seed=seed, inner=inner, batch_size=batch_size)
        subject.built[key] = (x, binarized, valid, inner, time.perf_counter() - started)
    return subject.built[key]


def binarization_warnings(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One warning per attack row whose binarization test failed, or could build no binarized model."""
    found = []
    for row in rows:
        test = row.get("binarization_test") or {}
        if test.get("passed") is not False and test.get("n") != 0:
            continue
        where = fmt.row_column(row)
        if test.get("n") == 0:
            message = (f"{row['method']}: none of the {test['setup_failed']} binarized models could be built (no "
                       f"linear readout separates the image's neighbourhood from the boundary point in the "
                       f"model's features)")
            advice = "the test says nothing about this attack; try another threat model or more images"
        else:
            message = (f"{row['method']} failed the binarization test: it fooled {test['success_rate']:.0%} of "
                       f"{test['n']} binarized models that each have an adversarial example within "
                       f"{test['threat']['label']} (the test passes at {test['pass_rate']:.0%})")
            advice = ADVICE
        found.append({"check": "binarization-test", "where": where, "message": message, "advice": advice})
    return found


__all__ = ["PASS_RATE", "bare_classifier", "binarization_test", "binarization_warnings", "check_binarizable",
           "threat_of_test"]
