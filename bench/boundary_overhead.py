"""Benchmark: what a Boundary Attack costs besides the model. Wall time per 1,000 model evaluations
(images through the model) for ours with each proposal prior and for foolbox 3.3.4's BoundaryAttack,
on the same model, images and seed; the model forward's share of that wall time; and the attack's
own time per 1,000 evaluations (wall minus the model's forward passes: noise generation, projections,
bookkeeping). Each attack runs `--repeats` times, interleaved with the others so that a slow phase of
the machine hits all of them; the table gives the median of each column. The process manages its heap
as the command line does (`advlab.core.device.manage_heap`), so the model's page faults do not bury
the attack's own cost. `--profile` prints torch.profiler's table of ours (default prior) after the run:
where a step's time goes besides the model call.

    python bench/boundary_overhead.py                    # CPU: a small Fashion-MNIST CNN, then MobileNetV2
    python bench/boundary_overhead.py --skip-photos --steps 1500 --repeats 3 --profile
    python bench/boundary_overhead.py --device cuda --skip-small

The small model is the lab's LeNet-size `fashion_cnn` (~0.2M parameters), trained here for one
epoch on 20,000 Fashion-MNIST images (a few seconds), attacked on 50 test images; MobileNetV2
(IMAGENET1K_V1) on the foolbox ImageNet photos. Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from advlab.attacks.boundary import DEFAULT_CANDIDATES, DEFAULT_PRIOR, BoundaryAttack
from advlab.attacks.priors import PRIORS
from advlab.core.criteria import Untargeted
from advlab.core.device import device_name, manage_heap, resolve_device, synchronize
from advlab.data.sources import load_images
from advlab.zoo.models import load_model
from advlab.zoo.wrappers import ImageClassifier


class TimedModel(torch.nn.Module):
    """Counts the images a model evaluates and the seconds its forward passes take."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        super().__init__()
        self.model, self.device = model, device
        self.images, self.seconds = 0, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        synchronize(self.device)
        t0 = time.perf_counter()
        out = self.model(x)
        synchronize(self.device)
        self.seconds += time.perf_counter() - t0
        self.images += x.shape[0]
        return out


def small_model(device: torch.device) -> tuple[ImageClassifier, torch.Tensor, torch.Tensor]:
    from advlab.data.fashion import FASHION_CLASSES
    from advlab.zoo.smallnets import FASHION_MEAN, FASHION_STD, fashion_cnn, train_classifier

    torch.manual_seed(0)
    net = fashion_cnn()
    model = ImageClassifier(net, name="fashion_cnn", weights="trained here", mean=(FASHION_MEAN,),
                            std=(FASHION_STD,), input_size=28, class_names=FASHION_CLASSES, in_channels=1)
    train = load_images("fashion-mnist:train", model, n=20000)
    train_classifier(net, train.x, train.y, epochs=1, seed=0)
    test = load_images("fashion-mnist:test", model, n=200)
    return model.eval().to(device), test.x.to(device), test.y.to(device)


def photo_model(device: torch.device) -> tuple[ImageClassifier, torch.Tensor, torch.Tensor]:
    model = load_model("mobilenet_v2", "IMAGENET1K_V1").to(device).to(memory_format=torch.channels_last).eval()
    data = load_images("imagenet-samples", model)
    return model, data.x.to(device), data.y.to(device)


def measure(attack: BoundaryAttack, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
            device: torch.device) -> dict[str, float]:
    timed = TimedModel(model, device).eval()
    synchronize(device)
    t0 = time.perf_counter()
    attack(timed, x, Untargeted(y), seed=0)
    synchronize(device)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "images": timed.images, "s_per_1000": 1000 * wall / timed.images,
            "model_share": timed.seconds / wall, "own_s_per_1000": 1000 * (wall - timed.seconds) / timed.images}


def profile_table(attack: BoundaryAttack, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> str:
    """torch.profiler's operators of one run, by self time (the model's own operators included)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        attack(model, x, Untargeted(y), seed=0)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=300, help="attack steps per run (foolbox: one candidate each)")
    p.add_argument("-n", type=int, default=50, help="small model: images attacked")
    p.add_argument("--photos", type=int, default=8, help="MobileNetV2: photos attacked")
    p.add_argument("--skip-small", action="store_true")
    p.add_argument("--skip-photos", action="store_true")
    p.add_argument("--repeats", type=int, default=1, help="runs of each attack, interleaved; the table shows medians")
    p.add_argument("--profile", action="store_true", help="then print torch.profiler's table of ours (default prior)")
    args = p.parse_args()
    device = resolve_device(args.device)
    manage_heap()
    print(f"device {device_name(device)}, {args.repeats} run(s) of each attack, medians")
    header = (f"{'model':14s} {'attack':26s} {'images':>9s} {'wall s':>7s} {'s / 1000 evals':>15s} {'model share':>12s}"
              f" {'own s / 1000':>13s}")
    print(header)
    print("-" * len(header))
    rows = []
    cases = [] if args.skip_small else [("fashion_cnn", small_model, args.n)]
    cases += [] if args.skip_photos else [("mobilenet_v2", photo_model, args.photos)]
    for name, build, n in cases:
        model, x, y = build(device)
        for p_ in model.parameters():
            p_.requires_grad_(False)
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        x, y = x[ok][:n], y[ok][:n]
        runs = [("foolbox (normal, K=1)", BoundaryAttack(steps=args.steps, backend="foolbox", progress=False))]
        runs += [(f"ours {prior} (K={DEFAULT_CANDIDATES})",
                  BoundaryAttack(steps=args.steps, max_queries=10**9, prior=prior, progress=False)) for prior in PRIORS]
        found: dict[str, list[dict[str, float]]] = {label: [] for label, _ in runs}
        for _ in range(args.repeats):
            for label, attack in runs:
                found[label].append(measure(attack, model, x, y, device))
        for label, _ in runs:
            r = {key: statistics.median(run[key] for run in found[label]) for key in found[label][0]}
            rows.append({"model": name, "attack": label, "runs": found[label], **r})
            print(f"{name:14s} {label:26s} {int(r['images']):9,d} {r['wall_s']:7.2f} {r['s_per_1000']:15.4f} "
                  f"{100 * r['model_share']:11.0f}% {r['own_s_per_1000']:13.4f}")
        if args.profile:
            ours = next(a for _, a in runs if a.backend == "ours" and a.prior == DEFAULT_PRIOR)
            print(profile_table(ours, model, x, y))
    print(json.dumps({"bench": "boundary_overhead", "device": device_name(device), "rows": rows}))


if __name__ == "__main__":
    main()
