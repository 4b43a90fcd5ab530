"""Benchmark: DAG on detection (Xie et al., ICCV 2017) against the detector's own forward+backward
pass over the same fixed proposals, measured in the same run on the same batch, with the time share
of the backbone and of the box head within that pass.

    python bench/dag_detection.py                                   # the lab's detector, 48 px scenes, CPU
    python bench/dag_detection.py --device cuda --model fasterrcnn_resnet50_fpn --size 800 -n 4

One DAG iteration is one forward (backbone, RoI pooling, box head on the targets) and one backward
pass with respect to the input, plus the active set and the update; the goal is an iteration close
to the bare pass. torchvision detectors run with random weights (`--weights none`; speed does not
depend on them) on random images, with `--targets` proposals per image as targets and random
adversarial labels; the lab's detector runs with its shipped weights on fashion-scenes and the
task's own targets. DAG runs a fixed number of iterations (threshold 1.0). Prints a table and a
JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from timing import median_time

from advlab.attacks.dag import DAG
from advlab.core.criteria import IGNORE, ProposalTargets
from advlab.core.device import apply_precision, device_name, resolve_device, synchronize
from advlab.zoo.models import load_model


def model_images_targets(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor,
                                                                                  ProposalTargets]:
    if args.model == "fashion_detector":
        from advlab.data.sources import load_images
        from advlab.tasks.detection import assign_targets
        from advlab.zoo.detnet import WEIGHTS

        model = load_model("advlab.zoo.detnet:fashion_detector", str(WEIGHTS), task="detection").to(device).eval()
        data = load_images("fashion-scenes:test", model, n=args.n)
        x = data.x.to(device)
        with torch.no_grad():
            props = model.proposals(x)
            probs = [lg.softmax(-1) for lg in model.proposal_logits(x, props)]
        boxes = assign_targets(props, probs, [{k: v.to(device) for k, v in b.items()} for b in data.boxes])
        targets = [b for b, _ in boxes]
    else:
        model = load_model(args.model, args.weights, task="detection").to(device).eval()
        x = torch.rand(args.n, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)).to(device)
        with torch.no_grad():
            targets = [p[:args.targets] for p in model.proposals(x)]
    counts = torch.tensor([len(t) for t in targets], device=device)
    slots = int(counts.max())
    boxes_padded = torch.zeros(len(targets), slots, 4, device=device)
    labels = torch.full((len(targets), slots), IGNORE, dtype=torch.long, device=device)
    gen = torch.Generator().manual_seed(1)
    for i, t in enumerate(targets):
        boxes_padded[i, :len(t)] = t
        labels[i, :len(t)] = torch.randint(1, model.num_classes, (len(t),), generator=gen).to(device)
    return model, x, ProposalTargets(labels, threshold=1.0, proposals=boxes_padded, counts=counts)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fashion_detector", help="fashion_detector (the lab's) or a torchvision "
                   "Faster R-CNN")
    p.add_argument("--weights", default="none")
    p.add_argument("--size", type=int, default=800, help="image side for torchvision models")
    p.add_argument("-n", type=int, default=16, help="images per batch")
    p.add_argument("--targets", type=int, default=300, help="target proposals per image (torchvision models)")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32")
    args = p.parse_args()
    device = resolve_device(args.device)
    autocast = apply_precision(args.precision)
    model, x, criterion = model_images_targets(args, device)
    model.autocast_dtype = autocast
    reps = max(3, args.iterations // 4)

    def full_pass() -> None:
        xa = x.clone().requires_grad_(True)
        torch.autograd.grad(criterion.evaluate(model, xa).amax(dim=1).sum(), xa)

    def backbone_pass() -> None:
        xa = x.clone().requires_grad_(True)
        images, _ = model.net.transform(list(xa))
        features = model._features(images.tensors)
        torch.autograd.grad(sum(f.sum() for f in features.values()), xa)

    base = median_time(full_pass, device, reps)
    backbone = median_time(backbone_pass, device, reps) if model.rcnn else float("nan")
    attack = DAG(max_iterations=args.iterations, compact_every=args.iterations + 1, progress=False)
    attack(model, x[:2], criterion.subset(slice(0, 2)), seed=0)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    result = attack(model, x, criterion, seed=0)
    synchronize(device)
    wall = time.perf_counter() - t0
    iterations = int(result.queries.max())
    per_iteration = wall / iterations if iterations else float("nan")
    row = {"bench": "dag_detection", "device": device_name(device), "model": args.model,
           "precision": args.precision, "n": x.shape[0], "size": list(x.shape[-2:]),
           "targets_per_image": float(criterion.counts.float().mean()), "iterations": iterations,
           "pass_s": base, "backbone_share": backbone / base, "box_head_share": 1 - backbone / base,
           "dag_s_per_iteration": per_iteration, "dag_iterations_per_s": 1 / per_iteration,
           "ratio": per_iteration / base, "wall_s": wall}
    print(f"device {row['device']}, {args.model} {args.precision}, batch {row['n']} x {tuple(row['size'])}, "
          f"{row['targets_per_image']:.0f} target proposals per image")
    print(f"{'run':40s} {'s/pass':>10s} {'share':>8s} {'vs pass':>9s}")
    print("-" * 70)
    print(f"{'forward+backward on the targets':40s} {base:10.4f} {1.0:8.0%} {1.0:8.2f}x")
    print(f"{'  of which backbone (transform incl.)':40s} {backbone:10.4f} {row['backbone_share']:8.0%}")
    print(f"{'  of which RoI pooling + box head':40s} {base - backbone:10.4f} {row['box_head_share']:8.0%}")
    print(f"{f'DAG iteration ({iterations} its)':40s} {per_iteration:10.4f} {'':8s} {row['ratio']:8.2f}x")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
