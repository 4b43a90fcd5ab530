"""Semantic segmentation: per-pixel predictions, reference maps (ground truth with 255 = void, or
the clean prediction for unlabeled data), pixel targets, dataset-level mIoU from a confusion matrix
(torchmetrics' `MulticlassJaccardIndex`, ignore_index 255) and pixel accuracy.

Targets (Xie et al., "Adversarial Examples for Semantic Segmentation and Object Detection", ICCV
2017): an attack that asks for adversarial labels (`dense_targets = "permutation"`, DAG) gets, per
image, background kept and every foreground class sent one-to-one to a foreground class absent from
the image, as in the reference code (keyed by the run seed and the image's pixels); `--target-class K` sends every pixel to K (0,
background, makes objects vanish); other attacks (FGSM, PGD) push every pixel away from its
reference class. An image counts as fooled once 99% of its valid pixels are (the DAG stopping rule).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from advlab.core.criteria import IGNORE, Targeted, Untargeted, label_dtype
from advlab.core.errors import AdvlabError, first_line
from advlab.core.images import Images, batches
from advlab.core.per_image import PerImageArrays
from advlab.core.rng import step_keys, uniform
from advlab.core.stats import median
from advlab.tasks import DefaultRun, Plan, Task, register_task
from advlab.tasks.dense_targets import TARGET_STREAM, adversarial_labels, set_keys
from advlab.tasks.segmentation.view import SegmentationView
from advlab.zoo.wrappers import ImageSegmenter, check_logits

if TYPE_CHECKING:
    from advlab.core.attack import Attack
    from advlab.core.config import AttackSpec
    from advlab.core.criteria import Criterion
    from advlab.data.image_set import ImageSet
    from advlab.tasks import Subject

SLICE = 64  # images per slice of a whole-set measurement: no temporary is larger than this many label maps
FOOLED_SHARE = 0.99  # an image is fooled once this share of its valid pixels is (DAG: < 1% still active)
RIGHT_MIOU = 0.5  # an image counts as right (robustness matrix, export) while its own mIoU is at least this


@dataclass
class SegPredictions:
    label: torch.Tensor  # (N, H, W) predicted class per pixel, on the CPU: uint8 where the classes fit
    num_classes: int

    def __len__(self) -> int:
        return int(self.label.shape[0])


def slices(n: int) -> list[slice]:
    """Consecutive slices of SLICE images covering n: whole-set measurements run slice by slice."""
    return [slice(i, min(i + SLICE, n)) for i in range(0, n, SLICE)]


def predict_segmentation(model: nn.Module, x: torch.Tensor | Images, batch_size: int,
                         device: torch.device) -> SegPredictions:
    """Per-pixel argmax for (N, C, H, W) images, in batches, kept as compact label maps; bad outputs
    and NaN are one-line errors."""
    labels = PerImageArrays(len(x))  # (N, H, W) label maps, filled a batch at a time (per_image says why)
    classes, start = getattr(model, "num_classes", 0), 0
    with torch.no_grad():
        for batch in batches(x, batch_size, device):
            logits = model(batch)
            check_logits(logits, "the model", batch=batch.shape[0], kind=ImageSegmenter)
            if not torch.isfinite(logits).all():
                raise AdvlabError("the model returned NaN or inf logits; check its weights, --mean/--std and "
                                  "--precision (try fp32)")
            classes = logits.shape[1]
            labels.put(start, {"label": logits.argmax(dim=1).to(label_dtype(classes)).cpu()})  # (B, H, W)
            start += batch.shape[0]
    empty = torch.zeros(0, *x.shape[-2:], dtype=label_dtype(classes))
    return SegPredictions(labels.complete().get("label", empty), classes)


def per_image_miou(pred: torch.Tensor, reference: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N, H, W) label maps -> (N,) each image's own mean IoU over the classes present in its reference
    or prediction (void ignored; 1.0 for an image without valid pixels), from one confusion matrix per
    image, SLICE images at a time."""
    return torch.cat([_own_miou(pred[s], reference[s], num_classes) for s in slices(len(pred))] or [torch.zeros(0)])


def _own_miou(pred: torch.Tensor, reference: torch.Tensor, num_classes: int) -> torch.Tensor:
    n, valid, pred = pred.shape[0], reference != IGNORE, pred.long()
    image = torch.arange(n)[:, None, None].expand_as(reference)
    cells = (image * num_classes + reference.clamp(0, num_classes - 1)) * num_classes + pred.clamp(0, num_classes - 1)
    confusion = torch.bincount(cells[valid], minlength=n * num_classes * num_classes).view(n, num_classes, num_classes)
    inter = confusion.diagonal(dim1=1, dim2=2).double()  # (N, K)
    union = confusion.sum(2).double() + confusion.sum(1).double() - inter  # (N, K)
    present = union > 0
    iou = torch.where(present, inter / union.clamp_min(1), 0.0)
    return torch.where(present.any(1), iou.sum(1) / present.sum(1).clamp_min(1), 1.0).float()


def reached(plan: Plan, pred: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the attack reached the image's targets by the reference code's test (cihangxie/DAG,
    `fooling_seg_net.m`): the target pixels not reached are at most 1% of its object pixels (of all its
    valid pixels where the reference class is unknown, e.g. untargeted)."""
    parts = []
    for s in slices(len(pred)):
        criterion = plan.criterion.subset(s)
        missing = (~_hits(criterion, pred[s]).flatten(1) & criterion.valid()).sum(1)  # (S,)
        parts.append(missing <= (1.0 - criterion.threshold) * criterion.foreground())
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)


def miou(pred: torch.Tensor, reference: torch.Tensor, num_classes: int) -> float:
    """Dataset-level mean IoU over the classes present in the reference or the prediction, from one
    confusion matrix over all pixels (void = 255 ignored): the PASCAL VOC measure, with torchmetrics'
    streaming metric updated SLICE images at a time (integer counts: the same as one update)."""
    from torchmetrics.classification import MulticlassJaccardIndex

    metric = MulticlassJaccardIndex(num_classes=num_classes, ignore_index=IGNORE, average="macro")
    for s in slices(len(pred)):
        metric.update(pred[s].flatten().long(), reference[s].flatten().long())  # uint8 would overflow in it
    return float(metric.compute())


def share(hits: int, count: int) -> float:
    """hits / count as a float32 mean of `count` booleans gives it (exact while count < 2**24)."""
    return float(torch.tensor(hits, dtype=torch.float32) / torch.tensor(count, dtype=torch.float32))


def pixel_accuracy(pred: torch.Tensor, reference: torch.Tensor) -> float:
    right, valid = 0, 0
    for s in slices(len(pred)):
        mask = reference[s] != IGNORE
        right += int(((pred[s] == reference[s]) & mask).sum())
        valid += int(mask.sum())
    return share(right, valid) if valid else math.nan


def painted_targets(path: str, x: torch.Tensor | Images, reference: torch.Tensor, num_classes: int, seed: int,
                    target_class: int | None) -> torch.Tensor:
    """The paper's demo targets (Xie et al. 2017, cihangxie/DAG): inside the shape of the mask file
    (white = inside, resized to each image) a class absent from the image's reference map (chosen per
    image, keyed by the seed and the image; or `target_class`), background (0) everywhere else."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            shape = torch.from_numpy(np.array(im.convert("L"))).float()[None, None] / 255.0  # (1, 1, h, w)
    except (OSError, ValueError) as exc:
        raise AdvlabError(f"--target-mask {path}: cannot read it ({first_line(exc)}); give a grayscale PNG") from None
    inside = torch.nn.functional.interpolate(shape, size=reference.shape[-2:], mode="nearest")[0, 0] > 0.5  # (H, W)
    if not bool(inside.any()):
        raise AdvlabError(f"--target-mask {path} has no white pixel: nothing would be painted")
    if target_class is None:
        present = torch.zeros(reference.shape[0], num_classes, dtype=torch.bool)  # (N, K)
        valid = reference != IGNORE
        present.scatter_(1, torch.where(valid, reference, 0).flatten(1).long(), valid.flatten(1))
        present[:, 0] = True  # background is never the painted class
        draws = uniform(step_keys(set_keys(x, seed), TARGET_STREAM, 1), (num_classes,))  # (N, K)
        paint = draws.masked_fill(present, -1.0).argmax(dim=1)  # (N,) a random absent class
        if bool(present.all(dim=1).any()):
            raise AdvlabError("--target-mask: an image contains every class, so no absent class can be painted; "
                              "add --target-class K")
    else:
        paint = torch.full((reference.shape[0],), target_class, dtype=torch.long)
    target = torch.where(inside[None], paint[:, None, None], 0)
    return torch.where(reference == IGNORE, IGNORE, target).to(label_dtype(num_classes))


@register_task
class Segmentation(Task):
    """A label per pixel: mIoU (torchmetrics, void ignored). An attack succeeds on an image by the
    reference code's test (`reached`); an image is right while its own mIoU is at least 0.5."""

    name = "segmentation"
    view = SegmentationView()
    # without --model: the lab's segmenter (weights shipped) on 16 scenes, a few minutes of DAG on 2 CPU cores
    default_run = DefaultRun("fashion_segnet", "DEFAULT", "fashion-scenes:test", 16)
    score_name = "miou"

    def predict(self, model: nn.Module, x: torch.Tensor | Images, batch_size: int,
                device: torch.device) -> SegPredictions:
        return predict_segmentation(model, x, batch_size, device)

    def reference(self, data: ImageSet, clean: SegPredictions) -> torch.Tensor:
        if data.y.dim() == 3:
            if tuple(data.y.shape[-2:]) != tuple(data.images.shape[-2:]):
                raise AdvlabError(f"{data.source}: masks are {tuple(data.y.shape[-2:])} but images are "
                                  f"{tuple(data.images.shape[-2:])}; give one mask per image, of the image's size")
            bad = (data.y != IGNORE) & ((data.y < 0) | (data.y >= clean.num_classes))
            if bool(bad.any()):
                raise AdvlabError(f"{data.source}: mask class ids span [{int(data.y[data.y != IGNORE].min())}, "
                                  f"{int(data.y[data.y != IGNORE].max())}] but the model has {clean.num_classes} "
                                  f"classes; use 0..{clean.num_classes - 1} (255 = void)")
            return data.y
        return clean.label  # unlabeled data: the clean prediction is the reference map

    def score(self, predictions: SegPredictions, reference: torch.Tensor) -> float:
        return miou(predictions.label, reference, predictions.num_classes)

    def correct(self, predictions: SegPredictions, reference: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the image's own mIoU is at least `RIGHT_MIOU`."""
        return per_image_miou(predictions.label, reference, predictions.num_classes) >= RIGHT_MIOU

    def plan(self, spec: AttackSpec, attack: Attack, subject: Subject, device: torch.device, *,
             seed: int) -> Plan:
        model, data, reference = subject.model, subject.data, subject.labels
        k = subject.clean.num_classes
        if spec.target_class is not None and not 0 <= spec.target_class < k:
            raise AdvlabError(f"--target-class {spec.target_class} is out of range: the model has {k} classes "
                              f"(0..{k - 1})")
        if spec.target_mask is not None:
            painted = painted_targets(spec.target_mask, data.images, reference, k, seed, spec.target_class)
            criterion = Targeted(painted, threshold=FOOLED_SHARE, original=reference)
        elif spec.target_class is not None:
            target = torch.where(reference == IGNORE, IGNORE, spec.target_class).to(label_dtype(k))
            criterion = Targeted(target, threshold=FOOLED_SHARE, original=reference)
        elif getattr(attack, "dense_targets", None) == "permutation":
            criterion = Targeted(adversarial_labels(data.images, reference, k, seed), threshold=FOOLED_SHARE,
                                 original=reference)
        else:
            criterion = Untargeted(reference, threshold=FOOLED_SHARE)
        if spec.starting_image is not None:
            raise AdvlabError(f"--starting-image is for classifiers; {model.name} is a segmentation model")
        attacked = (reference != IGNORE).flatten(1).any(dim=1)  # every image with a valid pixel
        return Plan(criterion, attacked, None)

    def metrics(self, subject: Subject, plan: Plan, adv: SegPredictions, success: torch.Tensor,
                queries: torch.Tensor, dist: dict[str, torch.Tensor]) -> dict[str, Any]:
        """mIoU and pixel accuracy clean vs adversarial, the target hit rate (share of valid target
        pixels at their adversarial label, or away from the reference when untargeted), the changed hit
        rate (the same over the pixels whose target differs from the reference: background kept as
        background does not count), the foreground hit rate (over the pixels whose reference class is
        not background: what DAG's stop rule counts), the pixel
        fooling ratio (share of valid pixels whose prediction changed), rms perturbation
        (sqrt(mean r^2), the paper's perceptibility) and iterations."""
        reference, clean, attacked = subject.labels, subject.clean, plan.attacked
        n = _PixelCounts()
        for s in slices(len(reference)):  # pixel counts, SLICE images at a time
            ref, criterion, att = reference[s], plan.criterion.subset(s), attacked[s][:, None, None]
            valid = ref != IGNORE
            hit = _hits(criterion, adv.label[s])  # (S, H, W)
            targets = valid & att
            changed = targets & (criterion.labels != ref)  # pixels sent elsewhere
            objects = targets & (ref != 0)  # foreground: what DAG's stop rule counts
            n.add(valid=valid, fooled=valid & (adv.label[s] != clean.label[s]), targets=targets,
                  targets_hit=targets & hit, changed=changed, changed_hit=changed & hit, objects=objects,
                  objects_hit=objects & hit)
        won = attacked & reached(plan, adv.label)
        rms = dist["mse"].sqrt()  # (N,) root mean square perturbation per image
        miou_adv = miou(adv.label, reference, adv.num_classes)
        return {
            "n_attacked": int(attacked.sum()),
            "success_rate": float(won.sum() / attacked.sum()) if attacked.any() else None,
            "fooling_ratio": share(n["fooled"], n["valid"]) if n["valid"] else None,
            "miou": miou_adv, "miou_clean": miou(clean.label, reference, clean.num_classes), "miou_adv": miou_adv,
            "pixel_acc_clean": pixel_accuracy(clean.label, reference),
            "pixel_acc_adv": pixel_accuracy(adv.label, reference),
            "target_hit_rate": share(n["targets_hit"], n["targets"]) if attacked.any() else None,
            "changed_hit_rate": share(n["changed_hit"], n["changed"]) if n["changed"] else None,
            "foreground_hit_rate": share(n["objects_hit"], n["objects"]) if n["objects"] else None,
            "rms_perturbation": median(rms[attacked]),
            "iterations_median": median(queries[attacked].float()),
            "median_l2": median(dist["l2"][attacked]),  # over attacked images: every one has a perturbation,
            "median_linf": median(dist["linf"][attacked]),  # and few reach the strict 99% success
            "median_mse": median(dist["mse"][attacked]),
            "queries_median": median(queries[attacked].float()),
        }

    def defense_records(self, subject: Subject, index: torch.Tensor, adv: SegPredictions,
                        after: SegPredictions) -> list[dict[str, Any]]:
        """Pixel accuracy of the image clean, adversarial and after the defense."""
        reference = subject.labels[index]  # (k, H, W)
        shares = [_pixel_shares(p.label[index], reference).tolist() for p in (subject.clean, adv, after)]
        return [{"pixel_acc_clean": c, "pixel_acc_adv": a, "pixel_acc_denoised": d} for c, a, d in zip(*shares)]

    def arrays(self, subject: Subject, adv: SegPredictions) -> dict[str, torch.Tensor]:
        """The label maps the report draws: reference, clean and adversarial prediction, (N, H, W) uint8."""
        small = label_dtype(adv.num_classes)
        return {"reference": subject.labels.to(small), "pred_clean": subject.clean.label.to(small),
                "pred_adv": adv.label.to(small)}

    def samples(self, subject: Subject, plan: Plan, adv: SegPredictions, success: torch.Tensor,
                queries: torch.Tensor, dist: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """One record per image: its target hit share, pixel accuracy clean and adversarial, sizes."""
        reference, clean = subject.labels, subject.clean
        hit = torch.cat([_pixel_shares(_hits(plan.criterion.subset(s), adv.label[s]), reference[s], given=True)
                         for s in slices(len(reference))] or [torch.zeros(0)])  # (N,)
        acc_clean, acc_adv = (torch.cat([_pixel_shares(p.label[s], reference[s]) for s in slices(len(reference))]
                                        or [torch.zeros(0)]) for p in (clean, adv))
        won = (plan.attacked & reached(plan, adv.label)).tolist()
        columns = zip(subject.data.names, plan.attacked.tolist(), won, hit.tolist(), acc_clean.tolist(),
                      acc_adv.tolist(), dist["l2"].tolist(), dist["linf"].tolist(), dist["mse"].sqrt().tolist(),
                      queries.tolist())
        return [{"name": name, "attacked": a, "success": ok, "target_hit": h, "pixel_acc_clean": pc,
                 "pixel_acc_adv": pa, "l2": l2, "linf": linf, "rms": rms, "queries": q}
                for name, a, ok, h, pc, pa, l2, linf, rms, q in columns]


def _pixel_shares(pred: torch.Tensor, reference: torch.Tensor, *, given: bool = False) -> torch.Tensor:
    """(k, H, W) label maps -> (k,) each image's share of valid pixels at their reference class (`given`:
    `pred` is already the (k, H, W) bool map of the pixels that count as right)."""
    valid = (reference != IGNORE).flatten(1)
    right = pred if given else pred == reference
    return (right.flatten(1) & valid).sum(1) / valid.sum(1).clamp_min(1)


def _hits(criterion: Criterion, pred: torch.Tensor) -> torch.Tensor:
    """(S, H, W) bool: pixels at their adversarial label (targeted) or off their reference (untargeted),
    for the criterion of the same S images."""
    labels = criterion.labels
    return pred == labels if criterion.targeted else pred != labels


class _PixelCounts(dict):
    """Pixel counts summed over slices: add(name=bool map, ...) adds each map's True pixels."""

    def add(self, **maps: torch.Tensor) -> None:
        for name, pixels in maps.items():
            self[name] = self.get(name, 0) + int(pixels.sum())
