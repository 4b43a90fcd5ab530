"""Benchmark: DAG (Xie et al., ICCV 2017) iterations against the segmentation model's own
forward+backward ceiling, measured in the same run on the same batch.

    python bench/dag.py                                              # the lab's segmenter, 48 px scenes, CPU
    python bench/dag.py --device cuda --model fcn_resnet50 --size 520 -n 8 --precision bf16
    python bench/dag.py --device cuda --model deeplabv3_resnet50 --size 520 -n 8

One DAG iteration is one forward and one backward pass with respect to the input plus the active
set, the l_inf normalisation and the update; the goal is an iteration within 1.2x of the bare pass.
torchvision models run with random weights (`--weights none`, speed does not depend on them) on
random images; the lab's segmenter runs with its shipped weights on fashion-scenes. DAG runs a
fixed number of iterations (targets that are never all reached: threshold 1.0 on random labels).
Prints a table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import time

import torch
from timing import median_time

from advlab.attacks.dag import DAG
from advlab.core.criteria import Targeted
from advlab.core.device import apply_precision, device_name, resolve_device, synchronize
from advlab.zoo.models import load_model


def model_and_images(args: argparse.Namespace, device: torch.device) -> tuple[torch.nn.Module, torch.Tensor]:
    if args.model == "fashion_segnet":
        from advlab.data.sources import load_images
        from advlab.zoo.segnet import MEAN, STD, WEIGHTS

        model = load_model("advlab.zoo.segnet:fashion_segnet", str(WEIGHTS), mean=[MEAN], std=[STD], task="segmentation")
        x = load_images("fashion-scenes:test", model, n=args.n).x
    else:
        model = load_model(args.model, args.weights, task="segmentation")
        x = torch.rand(args.n, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))
    return model.to(device).to(memory_format=torch.channels_last).eval(), x.to(device)


def ceiling(model: torch.nn.Module, x: torch.Tensor, device: torch.device, reps: int) -> float:
    """Seconds of one forward + backward pass w.r.t. the input on the batch (median of `reps`)."""
    def once() -> None:
        xa = x.clone().requires_grad_(True)
        torch.autograd.grad(model(xa).amax(dim=1).sum(), xa)

    return median_time(once, device, reps)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="fashion_segnet", help="fashion_segnet (the lab's) or a torchvision segmenter")
    p.add_argument("--weights", default="none")
    p.add_argument("--size", type=int, default=520, help="image side for torchvision models")
    p.add_argument("-n", type=int, default=16, help="images per batch")
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default="fp32")
    args = p.parse_args()
    device = resolve_device(args.device)
    autocast = apply_precision(args.precision)
    model, x = model_and_images(args, device)
    model.autocast_dtype = autocast
    with torch.no_grad():
        k = model(x[:1]).shape[1]
    labels = torch.randint(0, k, (x.shape[0], *x.shape[-2:]), generator=torch.Generator().manual_seed(1)).to(device)
    base = ceiling(model, x, device, reps=max(3, args.iterations // 4))
    attack = DAG(max_iterations=args.iterations, compact_every=args.iterations + 1, progress=False)
    attack(model, x[:2], Targeted(labels[:2]), seed=0)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    result = attack(model, x, Targeted(labels), seed=0)
    synchronize(device)
    wall = time.perf_counter() - t0
    iterations = int(result.queries.max())
    per_iteration = (wall / iterations) if iterations else float("nan")
    row = {"bench": "dag", "device": device_name(device), "model": args.model, "precision": args.precision,
           "n": x.shape[0], "size": list(x.shape[-2:]), "iterations": iterations,
           "ceiling_s_per_pass": base, "dag_s_per_iteration": per_iteration,
           "ceiling_images_per_s": x.shape[0] / base, "dag_images_per_s": x.shape[0] / per_iteration,
           "ratio": per_iteration / base, "wall_s": wall}
    print(f"device {row['device']}, {args.model} {args.precision}, batch {row['n']} x {tuple(row['size'])}")
    print(f"{'run':34s} {'s/pass':>10s} {'images/s':>10s} {'vs ceiling':>11s}")
    print("-" * 68)
    print(f"{'forward+backward (ceiling)':34s} {base:10.4f} {row['ceiling_images_per_s']:10.1f} {1.0:10.2f}x")
    print(f"{f'DAG iteration ({iterations} its)':34s} {per_iteration:10.4f} {row['dag_images_per_s']:10.1f} "
          f"{row['ratio']:10.2f}x")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
