"""Image classification: top-1 predictions, labels as references, untargeted / targeted criteria
over the images (one target each), accuracy and fooling ratio (Moosavi-Dezfooli et al., CVPR 2017:
the share of images whose predicted label changes), per-image records with class names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from advlab.core.criteria import Targeted, Untargeted
from advlab.core.device import out_of_memory
from advlab.core.errors import AdvlabError, first_line
from advlab.core.images import Images, RepeatedImage, batches
from advlab.core.registry import get_attack
from advlab.core.stats import median
from advlab.data.files import load_image_file
from advlab.data.image_set import ImageSet
from advlab.tasks import Plan, Subject, Task, register_task
from advlab.tasks.classification.view import ClassificationView
from advlab.zoo.wrappers import check_logits

if TYPE_CHECKING:
    from advlab.core.attack import Attack
    from advlab.core.config import AttackSpec


@dataclass
class Predictions:
    label: torch.Tensor  # (N,) int64 top-1
    confidence: torch.Tensor  # (N,) softmax probability of the top-1


def predict(model: nn.Module, x: torch.Tensor | Images, batch_size: int, device: torch.device) -> Predictions:
    """Top-1 label and confidence for (N, C, H, W) images, in batches (streamed where `x` is `Images`).
    A model that fails on the images, returns something other than (B, classes) logits, or NaN/inf,
    is an error on one line."""
    labels = torch.zeros(len(x), dtype=torch.long)  # (N,), filled in place: nothing of a batch outlives it
    confs = torch.zeros(len(x))  # (advlab.core.per_image says why)
    start = 0
    with torch.no_grad():
        for batch in batches(x, batch_size, device):
            try:
                logits = model(batch)
            except AdvlabError:
                raise
            except Exception as exc:  # the user's model: one line, not a traceback
                if out_of_memory(exc):
                    raise  # the batch size, not the model: said by the runner
                raise AdvlabError(f"the model failed on images of shape {tuple(batch.shape)} ({type(exc).__name__}: "
                                  f"{first_line(exc)}); check --input-size and the model's input channels") from exc
            check_logits(logits, "the model", batch=batch.shape[0])
            if not torch.isfinite(logits).all():
                raise AdvlabError("the model returned NaN or inf logits; check its weights, --mean/--std and "
                                  "--precision (try fp32)")
            prob = logits.softmax(dim=-1)
            conf, label = prob.max(dim=-1)
            labels[start:start + len(label)] = label.cpu()
            confs[start:start + len(conf)] = conf.cpu()
            start += len(label)
    return Predictions(labels, confs)


@register_task
class Classification(Task):
    """One label per image: top-1 accuracy; an image is fooled when its top-1 class leaves its label (or reaches a target)."""

    name = "classification"
    view = ClassificationView()
    score_name = "accuracy"

    def predict(self, model: nn.Module, x: torch.Tensor | Images, batch_size: int, device: torch.device) -> Predictions:
        return predict(model, x, batch_size, device)

    def reference(self, data: ImageSet, clean: Predictions) -> torch.Tensor:
        return torch.where(data.y >= 0, data.y, clean.label)  # (N,)

    def score(self, predictions: Predictions, reference: torch.Tensor) -> float:
        return float((predictions.label == reference).float().mean()) if len(reference) else 0.0

    def correct(self, predictions: Predictions, reference: torch.Tensor) -> torch.Tensor:
        return predictions.label == reference  # (N,)

    def plan(self, spec: AttackSpec, attack: Attack, subject: Subject, device: torch.device, *,
             seed: int) -> Plan:
        """Untargeted: the correctly classified images, away from their label; targeted: those not yet
        in the target class. Universal perturbations run on every image, away from its clean prediction
        (the fooling ratio). No image to attack is a valid plan."""
        model, data, clean, labels = subject.model, subject.data, subject.clean, subject.labels
        universal = attack.universal
        if spec.target_mask is not None:
            raise AdvlabError(f"--target-mask is for segmentation models; {model.name} is a classifier")
        if spec.target_class is not None and not 0 <= spec.target_class < model.num_classes:
            raise AdvlabError(f"--target-class {spec.target_class} is out of range: the model has "
                              f"{model.num_classes} classes (0..{model.num_classes - 1})")
        if universal:
            everyone = torch.ones(len(data), dtype=torch.bool)
            if spec.target_class is not None:
                return Plan(Targeted(torch.full_like(labels, spec.target_class)), everyone, None)
            return Plan(Untargeted(clean.label), everyone, None)
        if spec.target_class is None and spec.starting_image is None:
            return Plan(Untargeted(labels), clean.label == labels, None)
        start = _starting_image(spec, data, model, device) if spec.starting_image else None
        target = spec.target_class if spec.target_class is not None else int(start[1])  # type: ignore[index]
        if start is not None and start[1] != target:
            raise AdvlabError(f"--starting-image {spec.starting_image} is classified as class {start[1]} "
                              f"({model.class_names[start[1]]}), not the target class {target}; pick another image")
        attacked = clean.label != target
        starting = None
        if get_attack(spec.method).threat == "decision" and bool(attacked.any()):
            if start is None:
                pool = (clean.label == target).nonzero().squeeze(1)
                if pool.numel() == 0:
                    raise AdvlabError(f"no image in {data.source} is classified as class {target} "
                                      f"({model.class_names[target]}), so the decision-based attack has no starting "
                                      "point; pass --starting-image FILE (an image of that class)")
                start = (data.images[int(pool[0])], target)
            starting = RepeatedImage(start[0], len(data))  # (N, C, H, W), one image in memory
        return Plan(Targeted(torch.full_like(labels, target)), attacked, starting)

    def metrics(self, subject: Subject, plan: Plan, adv: Predictions, success: torch.Tensor,
                queries: torch.Tensor, dist: dict[str, torch.Tensor]) -> dict[str, Any]:
        """Success rate over attacked images; fooling ratio and accuracy over all; distances are
        medians over successful attacks."""
        attacked = plan.attacked
        won = attacked & success
        return {
            "n_attacked": int(attacked.sum()),
            "success_rate": float(won.sum() / attacked.sum()) if attacked.any() else None,
            "fooling_ratio": float((adv.label != subject.clean.label).float().mean()),
            "accuracy": self.score(adv, subject.labels),
            "median_l2": median(dist["l2"][won]),
            "median_linf": median(dist["linf"][won]),
            "median_mse": median(dist["mse"][won]),
            "queries_median": median(queries[attacked].float()),
        }

    def defense_records(self, subject: Subject, index: torch.Tensor, adv: Predictions,
                        after: Predictions) -> list[dict[str, Any]]:
        """Label, clean, adversarial and denoised top-1 classes with their names."""
        names, out = subject.model.class_names, []
        for j in index.tolist():
            label, clean, fooled, denoised = (int(subject.labels[j]), int(subject.clean.label[j]), int(adv.label[j]),
                                              int(after.label[j]))
            out.append({"label": label, "label_name": names[label], "clean_pred_name": names[clean],
                        "adv_pred_name": names[fooled], "denoised_pred": denoised,
                        "denoised_pred_name": names[denoised]})
        return out

    def samples(self, subject: Subject, plan: Plan, adv: Predictions, success: torch.Tensor,
                queries: torch.Tensor, dist: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """One record per image (tensors turned into lists once, not per element)."""
        names, clean, attacked = subject.model.class_names, subject.clean, plan.attacked
        won = (attacked & success).tolist()
        columns = zip(subject.data.names, subject.labels.tolist(), clean.label.tolist(), clean.confidence.tolist(),
                      adv.label.tolist(), adv.confidence.tolist(), attacked.tolist(), won, dist["l2"].tolist(),
                      dist["linf"].tolist(), queries.tolist())
        return [{"name": name, "label": y, "label_name": names[y], "clean_pred": c, "clean_pred_name": names[c],
                 "clean_conf": cc, "adv_pred": a, "adv_pred_name": names[a], "adv_conf": ac, "attacked": hit,
                 "success": ok, "l2": l2 if ok else None, "linf": linf if ok else None, "queries": q}
                for name, y, c, cc, a, ac, hit, ok, l2, linf, q in columns]


def _starting_image(spec: AttackSpec, data: ImageSet, model: nn.Module,
                    device: torch.device) -> tuple[torch.Tensor, int]:
    image = load_image_file(str(spec.starting_image), model)  # (C, H, W)
    if image.shape != data.images.shape[1:]:
        raise AdvlabError(f"--starting-image has shape {tuple(image.shape)} but the images are "
                          f"{tuple(data.images.shape[1:])}; set --input-size or use an image of that size")
    return image, int(predict(model, image[None], 1, device).label[0])
