"""The `attributes` task: multi-label attribute recognition (one logit per attribute, on when > 0),
scored by per-label accuracy; an attack fools an image once a quarter of its labels (one of four)
flip, by a per-label criterion. Its report view and glossary come with it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from advlab.core.criteria import Untargeted
from advlab.core.errors import AdvlabError
from advlab.core.images import Images, batches
from advlab.core.stats import median
from advlab.data.image_set import ImageSet
from advlab.tasks import Plan, Subject, Task, register_task
from advlab.view import fmt
from advlab.view.task_view import Column, TaskView, before_after, success_rate

FLIPPED_SHARE = 0.25  # an image is fooled once this share of its labels is wrong


@dataclass(frozen=True)
class LabelFlip(Untargeted):
    """Per-label criterion over (N, L) logits: each attribute label (N, L) in {0, 1} is a target,
    fooled when its logit's sign disagrees with it."""

    def fooled(self, outputs: torch.Tensor) -> torch.Tensor:  # (N, L) -> (N, L) bool
        return (outputs > 0).long() != self.labels

    def margins(self, outputs: torch.Tensor) -> torch.Tensor:  # (N, L), > 0 where a label is flipped
        return outputs * (1 - 2 * self.labels)

    def loss(self, outputs: torch.Tensor) -> torch.Tensor:  # (N,) binary cross-entropy, to ascend
        return F.binary_cross_entropy_with_logits(outputs, self.labels.float(), reduction="none").mean(1)


@dataclass
class Attributes:
    on: torch.Tensor  # (N, L) int64 in {0, 1}
    prob: torch.Tensor  # (N, L) sigmoid of the logits


class AttributesView(TaskView):
    label = "attributes"
    class_noun = "attributes"
    score_label = "label accuracy"
    columns: ClassVar[tuple[Column, ...]] = (
        Column("success rate", success_rate),
        Column("label acc. clean → adv.", before_after("clean_label_accuracy", "label_accuracy")),
        Column("labels flipped", lambda r: fmt.pct(r.get("labels_flipped"))),
        Column("median L∞", lambda r: fmt.num(r.get("median_linf"))),
    )
    glossary: ClassVar[tuple[tuple[str, str], ...]] = (
        ("success rate", "share of the images on which at least a quarter of the attribute labels flipped."),
        ("label acc. clean → adv.", "share of all attribute labels predicted right, before and after the attack."),
        ("labels flipped", "share of the attribute labels whose prediction the attack changed."),
        ("median L∞", "largest pixel change of the successful adversarials, median."),
    )

    def card_text(self, sample: dict[str, Any], l2: Any, no_adv: str | None) -> dict[str, str]:
        return {"label_text": ", ".join(sample["attributes"]) or "none",
                "clean_text": ", ".join(sample["clean"]) or "none", "adv_text": ", ".join(sample["adv"]) or "none",
                "distance_text": f"L∞ {fmt.num(sample.get('linf'))}"}


@register_task
class AttributesTask(Task):
    """Several yes/no attributes per image: per-label accuracy; fooled once a quarter of the labels flip."""

    name = "attributes"
    score_name = "label_accuracy"
    probes = False  # the sanity probes measure top-1 classifiers
    view = AttributesView()

    def predict(self, model: nn.Module, x: torch.Tensor | Images, batch_size: int,
                device: torch.device) -> Attributes:
        with torch.no_grad():
            logits = torch.cat([model(b).cpu() for b in batches(x, batch_size, device)])  # (N, L)
        return Attributes((logits > 0).long(), logits.sigmoid())

    def reference(self, data: ImageSet, clean: Attributes) -> torch.Tensor:
        if data.y.dim() != 2:
            raise AdvlabError(f"{data.source} has no attribute labels; use fashion-attributes")
        return data.y  # (N, L)

    def plan(self, spec: Any, attack: Any, subject: Subject, device: torch.device, *, seed: int) -> Plan:
        if spec.target_class is not None or spec.target_mask is not None:
            raise AdvlabError("the attributes task has no targeted mode; drop --target-class / --target-mask")
        everyone = torch.ones(len(subject.data), dtype=torch.bool)
        return Plan(LabelFlip(subject.labels, threshold=FLIPPED_SHARE), everyone, None)

    def score(self, predictions: Attributes, reference: torch.Tensor) -> float:
        return float((predictions.on == reference).float().mean())

    def correct(self, predictions: Attributes, reference: torch.Tensor) -> torch.Tensor:
        return (predictions.on == reference).float().mean(1) > 1 - FLIPPED_SHARE  # (N,)

    def metrics(self, subject: Subject, plan: Plan, adv: Attributes, success: torch.Tensor, queries: torch.Tensor,
                dist: dict[str, torch.Tensor]) -> dict[str, Any]:
        won = plan.attacked & success
        return {"n_attacked": int(plan.attacked.sum()), "success_rate": float(won.float().mean()),
                "label_accuracy": self.score(adv, subject.labels),
                "labels_flipped": float((adv.on != subject.clean.on).float().mean()),
                "median_linf": median(dist["linf"][won]), "queries_median": median(queries.float())}

    def samples(self, subject: Subject, plan: Plan, adv: Attributes, success: torch.Tensor, queries: torch.Tensor,
                dist: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        names = subject.model.class_names

        def words(on: torch.Tensor) -> list[str]:
            return [names[k] for k in on.nonzero().flatten().tolist()]

        won = plan.attacked & success
        return [{"name": subject.data.names[i], "attributes": words(subject.labels[i]),
                 "clean": words(subject.clean.on[i]), "adv": words(adv.on[i]), "attacked": True,
                 "success": bool(won[i]), "linf": float(dist["linf"][i]) if won[i] else None,
                 "queries": int(queries[i])} for i in range(len(subject.data))]
