"""`standard`: AutoAttack's standard evaluation (Croce & Hein, ICML 2020; RobustBench's reference), run
the way its reference code runs it: APGD-CE, then APGD-T (targeted DLR, 9 target classes), then FAB-T
(the targeted fast adaptive boundary attack, 9 target classes), then Square (5,000 queries), each only on
the images every earlier component left right, at the original's settings (100 iterations, one restart
each).

A randomised model (two passes on the same images differ: a stochastic defense, noise in the forward) gets
AutoAttack's rand version instead: APGD-CE and APGD-DLR, each averaging its gradients over 20 passes
(Expectation over Transformation, Athalye et al., ICML 2018), which is what the reference runs for such
models (`version="rand"`); `version: auto` (the default) chooses by those two passes, and the row says which
ran ("version").

The row keeps, per component, the images it fooled and the robust accuracy left after it
("components"), and the matrix gets one cumulative row per component next to the whole sequence.
A score-based component (Square) succeeding where the gradient components failed is AutoAttack's own
warning sign of gradient masking; the sanity checks flag it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.fab import FABT
from advlab.attacks.square import Square
from advlab.core.attack import Attack, AttackResult
from advlab.core.checks import check_choice, positive_int
from advlab.core.companion import Companion, register_companion
from advlab.core.criteria import Criterion, Targeted
from advlab.core.norms import NORMS
from advlab.core.randomness import passes_differ
from advlab.core.registry import register_attack

SEQUENCES = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "rand": ("apgd-ce", "apgd-dlr")}
VERSIONS = tuple(SEQUENCES)  # per_image "version" holds the index of the one that ran
THREATS = {"apgd-ce": "white-box", "apgd-t": "white-box", "fab-t": "white-box", "square": "score",
           "apgd-dlr": "white-box"}


@register_attack("standard", threat="white-box", tasks={"classification"}, default_of=("advlab.evaluate",))
class Standard(Attack):
    """AutoAttack's standard sequence (Croce & Hein, ICML 2020): APGD-CE, APGD-T, FAB-T, Square, each on the
    survivors."""

    quick_settings: ClassVar[dict[str, Any]] = {"eps": 0.3, "steps": 10, "targets": 3, "square_queries": 100}

    norm = "linf"  # the default of the `norm` setting; each instance overrides it with its own

    def __init__(self, *, eps: float = 8 / 255, norm: str = "linf", steps: int = 100, targets: int = 9,
                 square_queries: int = 5000, version: str = "auto", eot_samples: int = 20) -> None:
        self.norm = check_choice("norm", norm, tuple(NORMS))  # type: ignore[misc]  # instance overrides the ClassVar
        self.eps = NORMS[norm].check_eps(eps)
        self.steps = positive_int("steps", steps)
        self.targets = positive_int("targets", targets)
        self.square_queries = positive_int("square_queries", square_queries)
        self.version = check_choice("version", version, ("auto", *VERSIONS))
        self.eot_samples = positive_int("eot_samples", eot_samples)  # the rand version's passes per gradient

    def components(self, version: str = "standard") -> list[tuple[str, Attack]]:
        if version == "rand":
            return [("apgd-ce", APGD(eps=self.eps, norm=self.norm, steps=self.steps, loss="ce",
                                     eot_samples=self.eot_samples)),
                    ("apgd-dlr", APGD(eps=self.eps, norm=self.norm, steps=self.steps, loss="dlr",
                                      eot_samples=self.eot_samples))]
        return [("apgd-ce", APGD(eps=self.eps, norm=self.norm, steps=self.steps, loss="ce")),
                ("apgd-t", APGDT(eps=self.eps, norm=self.norm, steps=self.steps, targets=self.targets)),
                ("fab-t", FABT(eps=self.eps, norm=self.norm, steps=self.steps, targets=self.targets)),
                ("square", Square(eps=self.eps, norm=self.norm, max_queries=self.square_queries))]

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, seed: int,
            starting_points: torch.Tensor | None) -> AttackResult:
        if isinstance(criterion, Targeted):
            raise ValueError("standard is untargeted (AutoAttack's standard version); use apgd or square for a target")
        n = x.shape[0]
        x_adv, success = x.detach().clone(), torch.zeros(n, dtype=torch.bool, device=x.device)
        queries = torch.zeros(n, dtype=torch.long, device=x.device)
        component = torch.full((n,), -1, dtype=torch.long, device=x.device)  # which one fooled the image first
        version = self.version if self.version != "auto" else ("rand" if passes_differ(model, x) else "standard")
        for k, (_, attack) in enumerate(self.components(version)):
            left = (~success).nonzero().squeeze(1)
            if left.numel() == 0:
                break
            result = attack(model, x[left], criterion.subset(left), seed=seed)  # its own verification pass
            x_adv[left] = torch.where(result.success.view(-1, *[1] * (x.dim() - 1)), result.x_adv, x_adv[left])
            component[left] = torch.where(result.success, k, component[left])
            success[left] |= result.success
            queries[left] += result.queries
        ran = torch.full((n,), VERSIONS.index(version), dtype=torch.long, device=x.device)
        return AttackResult(x_adv=x_adv, success=success, queries=queries, distance=torch.zeros(n, device=x.device),
                            per_image={"component": component, "version": ran})




@register_companion("standard")
class StandardRows(Companion):
    """A `standard` row's companion: the matrix rows of its cumulative components, and their counts."""

    def parts(self, attack: Attack, per_image: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor, str]]:
        """Cumulative rows for the matrix: (label, fooled by this component or an earlier one (M,), threat)."""
        component = per_image.get("component")
        if component is None:
            return []
        names = _sequence(per_image)
        return [(" + ".join(names[:k + 1]), (component >= 0) & (component <= k), THREATS[name])
                for k, name in enumerate(names[:-1])]  # the last one is the whole row

    def row_extras(self, attack: Attack, tag: str, run: Any, subject: Any, row: dict[str, Any], batch_size: int,
                   device: torch.device, arrays: Path) -> dict[str, Any]:
        component = run.per_image.get("component")
        if component is None:
            return {}
        total = len(subject.data)
        attacked = int(component.numel())
        clean_right = int(subject.task.correct(subject.clean, subject.labels).sum())
        out, fooled_so_far = [], 0
        names = _sequence(run.per_image)
        for k, name in enumerate(names):
            fooled = int((component == k).sum())
            fooled_so_far += fooled
            out.append({"attack": name, "threat": THREATS[name], "fooled": fooled,
                        "robust_accuracy": (clean_right - fooled_so_far) / total if total else None})
        return {"components": out, "components_attacked": attacked, "version": _version(run.per_image)}


def _version(per_image: dict[str, torch.Tensor]) -> str:
    """The version that ran on these images (one per run: it is the model's), standard where none did."""
    ran = per_image.get("version")
    return VERSIONS[int(ran[0])] if ran is not None and ran.numel() else "standard"


def _sequence(per_image: dict[str, torch.Tensor]) -> tuple[str, ...]:
    return SEQUENCES[_version(per_image)]


__all__ = ["Standard", "StandardRows"]
