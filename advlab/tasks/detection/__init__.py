"""Object detection: post-processed detections, reference boxes (ground truth, or the clean detections
for unlabeled data), proposal targets for DAG, and mAP from torchmetrics' `MeanAveragePrecision`
(pycocotools underneath): mAP@0.5 (the PASCAL VOC measure) and COCO's mAP@[.5:.95].

Targets (Xie et al., "Adversarial Examples for Semantic Segmentation and Object Detection", ICCV
2017; reference code cihangxie/DAG, `assign_target_det.m`): the detector's region proposals on the
clean image, held fixed during the attack, that overlap a reference box with IoU > 0.1 and give
that box's class a score > 0.1 (the box with the highest IoU wins). Their adversarial labels: per
image, each class present goes one-to-one to a class absent from the image (background untouched;
keyed by the run seed and the image's pixels), or `--target-class K` for every target (0,
background, makes the objects vanish). DAG works on an image until 99% of its targets carry their
adversarial label; the attack succeeds on it once 99% of its targets are flipped away from their
reference class (the reference code's convergence test). An image counts as right (robustness
matrix, export) while half of its reference objects are found.
"""
from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchvision.ops import box_iou

from advlab.core.criteria import IGNORE, ProposalTargets
from advlab.core.errors import AdvlabError
from advlab.core.images import Images, as_images, batches
from advlab.core.rng import KEYS_BATCH, keys_of
from advlab.core.stats import median
from advlab.tasks import DefaultRun, Plan, Task, register_task
from advlab.tasks.dense_targets import adversarial_labels
from advlab.tasks.detection.view import DetectionView

if TYPE_CHECKING:
    from advlab.core.attack import Attack
    from advlab.core.config import AttackSpec
    from advlab.data.image_set import ImageSet
    from advlab.tasks import Subject

FOOLED_SHARE = 0.99  # an image is fooled once this share of its targets is
RIGHT_FOUND = 0.5  # an image counts as right (robustness matrix, export) while this share of its objects is found
TARGET_IOU, TARGET_SCORE = 0.1, 0.1  # a proposal is a target above both (the reference code's thresholds)
REFERENCE_SCORE = 0.5  # a detector's score threshold unless it states its own (`score_threshold`)
DRAWN = 20  # detections per image kept in arrays/ for the report (the most confident)
PROPOSAL_BATCH = 8  # images per proposal pass
Boxes = list[dict[str, torch.Tensor]]  # per image: boxes (G, 4) x1 y1 x2 y2, labels (G,) [, scores (G,)]


@dataclass
class DetPredictions:
    detections: Boxes  # per image, on the CPU
    num_classes: int
    x: Images  # (N, C, H, W) the images they were made on, read on demand (target hits are read from them)
    threshold: float = REFERENCE_SCORE  # the detector's score threshold (`score_threshold`)
    cache: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # name -> (what it was computed for, value)

    def __len__(self) -> int:
        return len(self.detections)

    def cached(self, name: str, key: Any, compute: Callable[[], Any]) -> Any:
        """`compute()` once per `key` object (a reference, a criterion): a row's metrics and samples share it."""
        if name not in self.cache or self.cache[name][0] is not key:
            self.cache[name] = (key, compute())
        return self.cache[name][1]


def predict_detection(model: nn.Module, x: torch.Tensor | Images, batch_size: int,
                      device: torch.device) -> DetPredictions:
    """Detections for (N, C, H, W) images, in batches, moved to the CPU. The predictions refer to the
    images (target outcomes are read from them in batches), without reading them into memory."""
    x = as_images(x)
    found: Boxes = []
    with torch.no_grad():
        for batch in batches(x, batch_size, device):
            for det in model.detect(batch):
                found.append({k: v.detach().cpu() for k, v in det.items()})
    return DetPredictions(found, model.num_classes, x, score_threshold(model))


def mean_average_precision(predictions: Boxes, reference: Boxes) -> tuple[float, float]:
    """(mAP@0.5, COCO mAP@[.5:.95]) over the data set, by torchmetrics in one evaluation."""
    from torchmetrics.detection import MeanAveragePrecision

    metric = MeanAveragePrecision()
    metric.update([{k: d[k] for k in ("boxes", "labels", "scores")} for d in predictions],
                  [{k: r[k] for k in ("boxes", "labels")} for r in reference])
    result = metric.compute()
    return float(result["map_50"]), float(result["map"])


def precision_of(predictions: DetPredictions, reference: Boxes) -> tuple[float, float]:
    """`mean_average_precision`, computed once per predictions and reference."""
    return predictions.cached("map", reference,
                              lambda: mean_average_precision(predictions.detections, reference))


def score_threshold(model: nn.Module) -> float:
    """The score at which the detector calls a detection: its own `score_threshold` where it states
    one (the contract in advlab/zoo/detectors.py), else 0.5."""
    stated = getattr(model, "score_threshold", None)
    return REFERENCE_SCORE if stated is None else float(stated)


def found_per_image(detections: Boxes, reference: Boxes, score: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,) reference objects that a detection of their class finds (IoU >= 0.5, score >= `score`), and
    (N,) reference objects, per image."""
    found, total = torch.zeros(len(reference), dtype=torch.long), torch.zeros(len(reference), dtype=torch.long)
    for i, (det, ref) in enumerate(zip(detections, reference)):  # per image: a few boxes, not a hot loop
        total[i] = len(ref["labels"])
        keep = det["scores"] >= score
        boxes, labels = det["boxes"][keep], det["labels"][keep]
        if len(ref["labels"]) == 0 or len(labels) == 0:
            continue
        same = ref["labels"][:, None].to(labels.device) == labels[None]  # (G, D)
        found[i] = int(((box_iou(ref["boxes"].to(boxes), boxes) >= 0.5) & same).any(dim=1).sum())
    return found, total


def found_share(detections: Boxes, reference: Boxes, score: float) -> float | None:
    """Share of the reference objects that a detection of their class finds (IoU >= 0.5, score >=
    `score`); None without reference objects."""
    found, total = found_per_image(detections, reference, score)
    return int(found.sum()) / int(total.sum()) if int(total.sum()) else None


def assign_targets(proposals: list[torch.Tensor], probs: list[torch.Tensor],
                   reference: Boxes) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per image (target proposals (T, 4), their reference class (T,)): proposals with IoU > 0.1 to a
    reference box whose class they score above 0.1; the box of highest IoU among those wins."""
    out = []
    for props, p, ref in zip(proposals, probs, reference):  # per image: a few hundred proposals, not a hot loop
        boxes, labels = ref["boxes"].to(props), ref["labels"].to(props.device)
        if boxes.numel() == 0 or props.numel() == 0:
            out.append((props[:0], labels[:0]))
            continue
        iou = box_iou(boxes, props)  # (G, P)
        ok = (iou > TARGET_IOU) & (p[:, labels].T > TARGET_SCORE)  # (G, P)
        owner = (iou * ok).argmax(dim=0)  # (P,) the reference box each proposal belongs to
        keep = ok.any(dim=0)
        out.append((props[keep], labels[owner[keep]]))
    return out


@register_task
class Detection(Task):
    """Boxes per image: mAP@0.5 (torchmetrics); DAG's targets are region proposals held fixed (Xie et al., ICCV 2017)."""

    name = "detection"
    view = DetectionView()
    # without --model: the lab's detector (weights shipped) on 16 scenes, a few minutes of DAG on 2 CPU cores
    default_run = DefaultRun("fashion_detector", "DEFAULT", "fashion-scenes:test", 16)
    score_name = "map50"
    probes = False  # the gradient and unbounded-attack checks read logits of images, not of proposals

    def __init__(self) -> None:
        # model -> image key -> (proposals, probabilities); entries go with their model
        self._memo: weakref.WeakKeyDictionary[nn.Module, dict[int, tuple[torch.Tensor, torch.Tensor]]] = \
            weakref.WeakKeyDictionary()

    def predict(self, model: nn.Module, x: torch.Tensor | Images, batch_size: int,
                device: torch.device) -> DetPredictions:
        return predict_detection(model, x, batch_size, device)

    def reference(self, data: ImageSet, clean: DetPredictions) -> Boxes:  # type: ignore[override]
        if data.boxes is not None:
            height, width = data.images.shape[-2:]
            for i, ref in enumerate(data.boxes):
                b, g = ref["boxes"], ref["labels"]
                if b.numel() and (bool((b < 0).any()) or bool((b[:, 2] > width).any()) or
                                  bool((b[:, 3] > height).any()) or bool((b[:, 2:] <= b[:, :2]).any())):
                    raise AdvlabError(f"{data.source}: a box of {data.names[i]} lies outside its {width}x{height} "
                                      "image or is empty; give boxes as x1 y1 x2 y2 inside the image")
                if g.numel() and (int(g.min()) < 1 or int(g.max()) >= clean.num_classes):
                    raise AdvlabError(f"{data.source}: {data.names[i]} has box class {int(g.max())} but the model "
                                      f"has classes 1..{clean.num_classes - 1} (0 = background)")
            return data.boxes
        return [{"boxes": d["boxes"][d["scores"] >= clean.threshold], "labels": d["labels"][d["scores"] >= clean.threshold]}
                for d in clean.detections]

    def score(self, predictions: DetPredictions, reference: Boxes) -> float:  # type: ignore[override]
        return precision_of(predictions, reference)[0]

    def correct(self, predictions: DetPredictions, reference: Boxes) -> torch.Tensor:  # type: ignore[override]
        """(N,) bool: at least `RIGHT_FOUND` of the image's reference objects are found at the detector's
        score threshold (an image without objects is right)."""
        found, total = found_per_image(predictions.detections, reference, predictions.threshold)
        return found >= RIGHT_FOUND * total

    def plan(self, spec: AttackSpec, attack: Attack, subject: Subject, device: torch.device, *,
             seed: int) -> Plan:
        """Fixed proposals on the clean images (once per image) and their adversarial labels."""
        model, data, reference = subject.model, subject.data, subject.labels
        k = model.num_classes
        if spec.target_class is not None and not 0 <= spec.target_class < k:
            raise AdvlabError(f"--target-class {spec.target_class} is out of range: the model has {k} classes "
                              f"(0..{k - 1}; 0 = background makes the objects vanish)")
        if spec.target_mask is not None or spec.starting_image is not None:
            raise AdvlabError(f"--target-mask and --starting-image are not for detection; {model.name} is a detector")
        proposals, probs = self._proposals(model, data.images, device)
        targets = assign_targets(proposals, probs, reference)
        counts = torch.tensor([len(t[0]) for t in targets])  # (N,)
        slots = max(int(counts.max()) if len(counts) else 0, 1)
        boxes = torch.zeros(len(data), slots, 4)
        original = torch.full((len(data), slots), IGNORE, dtype=torch.long)  # (N, P) reference class per target
        for i, (b, g) in enumerate(targets):
            boxes[i, :len(b)], original[i, :len(g)] = b, g
        if spec.target_class is not None:
            labels = torch.where(original == IGNORE, IGNORE, spec.target_class)
        else:  # present classes -> absent ones, as for segmentation (background is no target here)
            labels = adversarial_labels(data.images, original, k, seed)
        criterion = ProposalTargets(labels, threshold=FOOLED_SHARE, proposals=boxes, counts=counts, original=original)
        return Plan(criterion, counts > 0, None)

    def _proposals(self, model: nn.Module, x: Images,
                   device: torch.device) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: the fixed proposals on the clean image (P, 4) and the box head's class
        probabilities for them (P, K). Computed once per model and image, then remembered: every
        attack row (and the runner's preflight) plans on the same proposals."""
        memo = self._memo.setdefault(model, {})
        keys = keys_of(x.batches(KEYS_BATCH), 0).tolist()
        missing = torch.tensor([i for i, key in enumerate(keys) if key not in memo], dtype=torch.long)
        with torch.no_grad():
            parts = x.batches(PROPOSAL_BATCH, missing) if len(missing) else ()
            for index, xb in zip(missing.split(PROPOSAL_BATCH), parts):
                xb = xb.to(device)
                props = model.proposals(xb)
                for i, p, lg in zip(index.tolist(), props, model.proposal_logits(xb, props)):
                    memo[keys[i]] = (p.cpu(), lg.softmax(-1).cpu())
        return [memo[k][0] for k in keys], [memo[k][1] for k in keys]

    def metrics(self, subject: Subject, plan: Plan, adv: DetPredictions, success: torch.Tensor,
                queries: torch.Tensor, dist: dict[str, torch.Tensor]) -> dict[str, Any]:
        """mAP@0.5 and COCO mAP clean vs adversarial, the share of targets at their adversarial label
        and the share no longer predicted as their reference class (flipped: the reference code's
        convergence test), the share of reference objects still found at the detector's score
        threshold and at half of it (an attack that stops exactly at the decision leaves scores just
        under the threshold), rms perturbation (the paper's perceptibility), iterations."""
        reference, clean, attacked = subject.labels, subject.clean, plan.attacked
        hits, flipped, valid = _target_outcomes(subject.model, plan, adv)  # (N, P) each
        won = attacked & _flipped_enough(flipped, valid)
        rms = dist["mse"].sqrt()
        (map50_clean, map_clean), (map50_adv, map_adv) = precision_of(clean, reference), precision_of(adv, reference)
        threshold = clean.threshold
        return {
            "n_attacked": int(attacked.sum()),
            "n_targets": int(valid.sum()),
            "success_rate": float(won.sum() / attacked.sum()) if attacked.any() else None,
            "map50": map50_adv, "map50_clean": map50_clean, "map50_adv": map50_adv,
            "map_clean": map_clean, "map_adv": map_adv,
            "target_hit_rate": float(hits[valid].float().mean()) if valid.any() else None,
            "flipped_rate": float(flipped[valid].float().mean()) if valid.any() else None,
            "score_threshold": threshold, "lower_threshold": threshold / 2,
            "found_clean": found_share(clean.detections, reference, threshold),
            "found_adv": found_share(adv.detections, reference, threshold),
            "found_adv_lower": found_share(adv.detections, reference, threshold / 2),
            "rms_perturbation": median(rms[attacked]),
            "iterations_median": median(queries[attacked].float()),
            "median_l2": median(dist["l2"][attacked]),
            "median_linf": median(dist["linf"][attacked]),
            "median_mse": median(dist["mse"][attacked]),
            "queries_median": median(queries[attacked].float()),
        }

    def samples(self, subject: Subject, plan: Plan, adv: DetPredictions, success: torch.Tensor,
                queries: torch.Tensor, dist: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """One record per image: its targets and the share flipped, detections clean and adversarial, sizes."""
        hits, flipped, valid = _target_outcomes(subject.model, plan, adv)
        count = valid.sum(1)
        share, away = ((hits & valid).sum(1) / count.clamp_min(1)), ((flipped & valid).sum(1) / count.clamp_min(1))
        won = (plan.attacked & _flipped_enough(flipped, valid)).tolist()
        columns = zip(subject.data.names, plan.attacked.tolist(), won, count.tolist(), share.tolist(), away.tolist(),
                      [len(d["boxes"]) for d in subject.clean.detections], [len(d["boxes"]) for d in adv.detections],
                      dist["l2"].tolist(), dist["linf"].tolist(), dist["mse"].sqrt().tolist(), queries.tolist())
        return [{"name": name, "attacked": a, "success": ok, "targets": t, "target_hit": h if t else None,
                 "flipped": f if t else None, "detections_clean": dc, "detections_adv": da, "l2": l2, "linf": linf,
                 "rms": rms, "queries": q}
                for name, a, ok, t, h, f, dc, da, l2, linf, rms, q in columns]

    def defense_records(self, subject: Subject, index: torch.Tensor, adv: DetPredictions,
                        after: DetPredictions) -> list[dict[str, Any]]:
        """Reference objects, and how many of them a detection finds clean, adversarial and after the defense."""
        picked = index.tolist()
        reference = [subject.labels[j] for j in picked]
        found = [found_per_image([p.detections[j] for j in picked], reference, p.threshold)
                 for p in (subject.clean, adv, after)]
        return [{"objects": int(total), "found_clean": int(c), "found_adv": int(a), "found_denoised": int(d)}
                for total, c, a, d in zip(found[0][1], found[0][0], found[1][0], found[2][0])]

    def arrays(self, subject: Subject, adv: DetPredictions) -> dict[str, torch.Tensor]:
        """What the report draws: reference boxes and the most confident clean and adversarial
        detections, padded per image (label -1 = empty slot)."""
        return {**_padded("reference", subject.labels), **_padded("clean", subject.clean.detections),
                **_padded("adv", adv.detections)}


def _flipped_enough(flipped: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N, P) -> (N,) bool: the attack succeeded on the image by the reference code's convergence test
    (cihangxie/DAG, `fooling_det_net.m`: no target keeps its reference class), with the 1% slack of the
    stop rule: at least `FOOLED_SHARE` of its targets are flipped away from their reference class."""
    return (valid & ~flipped).sum(1) <= (1.0 - FOOLED_SHARE) * valid.sum(1)


def _target_outcomes(model: nn.Module, plan: Plan,
                     adv: DetPredictions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, P) bool each, on the adversarial images: targets at their adversarial label, targets no
    longer predicted as their reference class (the reference code's convergence test), valid targets.
    One pass over the proposals per row: metrics and samples share it."""
    return adv.cached("targets", plan.criterion, lambda: _proposal_outcomes(model, plan.criterion, adv.x))


def _proposal_outcomes(model: nn.Module, criterion: ProposalTargets,
                       x: Images) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    pred = torch.zeros(criterion.labels.shape, dtype=torch.long)  # (N, P), filled in place (core.per_image)
    with torch.no_grad():
        for i, xb in zip(range(0, len(criterion), PROPOSAL_BATCH), batches(x, PROPOSAL_BATCH, device)):
            part = criterion.subset(slice(i, i + PROPOSAL_BATCH)).to(device)
            pred[i:i + len(xb)] = part.evaluate(model, xb).argmax(dim=1).cpu()
    valid = criterion.valid().cpu()  # (N, P)
    return (pred == criterion.labels) & valid, (pred != criterion.original) & valid, valid


def _padded(prefix: str, boxes: Boxes) -> dict[str, torch.Tensor]:
    """`{prefix}_boxes` (N, D, 4), `{prefix}_labels` (N, D) (-1 = empty) and `{prefix}_scores` (N, D)."""
    n = len(boxes)
    out_boxes, labels, scores = torch.zeros(n, DRAWN, 4), torch.full((n, DRAWN), -1), torch.zeros(n, DRAWN)
    for i, d in enumerate(boxes):
        score = d.get("scores", torch.ones(len(d["labels"])))
        order = score.argsort(descending=True)[:DRAWN]
        out_boxes[i, :len(order)] = d["boxes"][order].float()
        labels[i, :len(order)], scores[i, :len(order)] = d["labels"][order], score[order].float()
    return {f"{prefix}_boxes": out_boxes, f"{prefix}_labels": labels, f"{prefix}_scores": scores}
