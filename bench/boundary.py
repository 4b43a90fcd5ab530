"""Benchmark: advlab's Boundary Attack vs foolbox 3.3.4's BoundaryAttack on the same model, images
and seed, plus the model's own forward ceiling measured in the same run.

    python bench/boundary.py                         # MobileNetV2 on the 20 foolbox ImageNet samples
    python bench/boundary.py --budgets 1000,5000,25000 --candidates 12 --device cuda
    python bench/boundary.py --model advlab.zoo.smallnets:fashion_cnn --weights reports/models/fashion_cnn_plain.pt \
        --mean 0.5 --std 0.5 --input-size 28 --data fashion-mnist:test  # 28-pixel images (bench/robust_models.py trains it)

For each budget B: foolbox runs B steps (one candidate per step plus its spherical checks); ours
runs with --max-queries equal to foolbox's model calls per image (equal model evaluations), and
`--ours-at 1000,5000` adds ours at those model evaluations per image. A
last row runs ours with --target-l2 set to foolbox's median L2 at the largest budget, to time how
fast we reach foolbox's best result. `--priors` compares our proposal priors (and `--refine-after
1000,none` the coarse-to-fine grid against one grid); `--hopskipjump S,...`
adds foolbox's HopSkipJumpAttack (Chen et al., IEEE S&P 2020) as a second reference, each followed
by ours at the same model evaluations per image; `--set KEY=VALUE` sets ours' settings (e.g. starts=8).
"vs foolbox" is the geometric mean over the images of each row's L2 over the latest foolbox
BoundaryAttack row's (below 1: closer, image by image). Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import time

import torch

from advlab.attacks.boundary import DEFAULT_CANDIDATES, DEFAULT_REFINE_AFTER, BoundaryAttack
from advlab.core.criteria import Untargeted
from advlab.core.device import apply_precision, device_name, manage_heap, resolve_device, synchronize
from advlab.core.settings import key_value
from advlab.core.stats import median
from advlab.data.sources import load_images
from advlab.tasks.classification import predict
from advlab.zoo.models import load_model


def forward_ceiling(model: torch.nn.Module, shape: tuple[int, ...], batch: int, device: torch.device,
                    seconds: float = 3.0) -> float:
    """Images per second of plain forward passes at this batch size (the bound on any attack)."""
    x = torch.rand(batch, *shape, device=device)
    with torch.no_grad():
        for _ in range(2):
            model(x)
        synchronize(device)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            model(x)
            n += batch
        synchronize(device)
    return n / (time.perf_counter() - t0)


START_QUERIES = 100  # --foolbox-starts ours: our one-start search and first steps, then foolbox from there


def attack_once(attack: BoundaryAttack, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                seed: int, device: torch.device, starting_points: torch.Tensor | None = None) -> dict[str, float]:
    synchronize(device)
    t0 = time.perf_counter()
    r = attack(model, x, Untargeted(y), seed=seed, starting_points=starting_points)
    synchronize(device)
    wall = time.perf_counter() - t0
    images = float(r.queries.sum())
    mse = (r.distance[r.success] ** 2 / x[0].numel())
    return {"wall_s": wall, "images_per_s": images / wall, "queries_median": float(r.queries.float().median()),
            "median_l2": median(r.distance[r.success]) or float("nan"), "median_mse": median(mse) or float("nan"),
            "success_rate": float(r.success.float().mean()), "l2": r.distance.tolist()}


class ImageCounter(torch.nn.Module):
    """Counts the images a model is evaluated on (HopSkipJump evaluates many points per image per call)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.images = model, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += x.shape[0]
        return self.model(x)


def hopskipjump_once(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int,
                     device: torch.device, starting_points: torch.Tensor | None = None) -> dict[str, float]:
    """foolbox 3's HopSkipJumpAttack (Chen, Jordan & Wainwright, IEEE S&P 2020), untargeted, l2;
    queries per image = images evaluated / images attacked (it batches all images' probes together)."""
    import foolbox as fb

    counter = ImageCounter(model).eval()
    fmodel = fb.PyTorchModel(counter, bounds=(0.0, 1.0), device=device)
    attack = fb.attacks.HopSkipJumpAttack(steps=steps)
    synchronize(device)
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        _, x_adv, success = attack(fmodel, x, fb.criteria.Misclassification(y), epsilons=None,
                                   starting_points=starting_points)
    synchronize(device)
    wall = time.perf_counter() - t0
    l2 = (x_adv - x).flatten(1).norm(dim=1)
    mse = l2[success] ** 2 / x[0].numel()
    return {"wall_s": wall, "images_per_s": counter.images / wall, "queries_median": counter.images / x.shape[0],
            "median_l2": median(l2[success]) or float("nan"), "median_mse": median(mse) or float("nan"),
            "success_rate": float(success.float().mean()), "l2": torch.where(success, l2, math.inf).tolist()}


def per_image_ratio(r: dict, reference: dict) -> float:
    """`geometric_mean_ratio` of two rows' per-image L2."""
    return geometric_mean_ratio(torch.tensor(r["l2"]), torch.tensor(reference["l2"]))


def geometric_mean_ratio(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """Geometric mean over the images both attacks succeeded on (finite L2) of L2 / the reference's L2
    (below 1: closer than the reference, image by image, where a median looks at the middle images only)."""
    both = torch.isfinite(ours) & torch.isfinite(theirs) & (theirs > 0)
    return float((ours[both] / theirs[both]).log().mean().exp())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--weights", default="IMAGENET1K_V1")
    p.add_argument("--mean", type=float, nargs="+", help="per-channel mean of a factory model, e.g. 0.5")
    p.add_argument("--std", type=float, nargs="+", help="per-channel std of a factory model, e.g. 0.5")
    p.add_argument("--input-size", type=int, help="image side a factory model expects, e.g. 28")
    p.add_argument("--data", default="imagenet-samples")
    p.add_argument("-n", type=int, default=20)
    p.add_argument("--budgets", default="1000,5000", help="foolbox steps per row, comma-separated")
    p.add_argument("--ours-at", default="", metavar="EVALUATIONS,...", help="also run ours (each prior) at these "
                   "model evaluations per image, e.g. 1000,5000 against foolbox's --budgets 20000")
    p.add_argument("--candidates", type=int, default=DEFAULT_CANDIDATES, help="ours: proposals per image per step")
    p.add_argument("--priors", default="lowfreq,normal", help="proposal priors of ours to compare, comma-separated "
                   "(lowfreq, normal, perlin); the first also runs the time-to-foolbox's-best row")
    p.add_argument("--refine-after", default=str(DEFAULT_REFINE_AFTER), metavar="QUERIES,...",
                   help="ours: walk queries after which the prior's grid doubles, comma-separated values to compare; "
                        "'none' keeps one grid (default: %(default)s)")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   type=lambda text: key_value(text, f"--set {text!r}", "--set starts=8"),
                   help="a setting of ours for every row of ours, e.g. starts=8")
    p.add_argument("--skip-foolbox", action="store_true")
    p.add_argument("--foolbox-starts", choices=("foolbox", "ours"), default="foolbox",
                   help="foolbox's own start (blended uniform noise) for its BoundaryAttack and HopSkipJump, or "
                   "the adversarial points ours reaches in "
                   f"{START_QUERIES} evaluations from one start, as foolbox's own (for models where foolbox's start fails, e.g. adversarially trained "
                   "ones; those evaluations are not counted in foolbox's rows)")
    p.add_argument("--surrogate", help="also run ours (first prior) biased by this surrogate model (Brunner et "
                   "al.), e.g. resnet18; it needs its weights (torchvision's download, or the cache)")
    p.add_argument("--hopskipjump", default="", metavar="STEPS,...", help="also run foolbox's HopSkipJumpAttack "
                   "with these step counts, and ours (first prior) at the same model evaluations per image")
    args = p.parse_args()

    device = resolve_device(args.device)
    manage_heap()  # the command line's allocator policy (CPU forward passes reuse their buffers)
    autocast = apply_precision(args.precision)
    model = load_model(args.model, args.weights, mean=args.mean, std=args.std, input_size=args.input_size).to(device)
    model = model.to(memory_format=torch.channels_last)
    model.autocast_dtype = autocast
    data = load_images(args.data, model, n=args.n)
    clean = predict(model, data.x, 64, device)
    correct = clean.label == data.y
    x, y = data.x[correct].to(device), data.y[correct].to(device)
    n = x.shape[0]
    batch = n * args.candidates
    ceiling = {b: forward_ceiling(model, tuple(x.shape[1:]), b, device) for b in sorted({n, batch})}
    # measured again at the end (a busy machine at the start would understate it): the best of both counts
    print(f"device {device_name(device)}, {args.model} {args.weights}, {n} correctly classified images, "
          f"precision {args.precision}")
    print("forward ceiling: " + ", ".join(f"batch {b}: {v:,.0f} img/s" for b, v in ceiling.items()))

    rows = []
    header = (f"{'run':48s} {'wall s':>8s} {'img/s':>9s} {'%ceil':>6s} {'queries':>8s} {'median L2':>10s} "
              f"{'median MSE':>11s} {'vs foolbox':>10s}")
    print(header)
    print("-" * len(header))

    def show(name: str, r: dict[str, float], b: int) -> None:
        r["ceiling"] = ceiling[b]
        rows.append({"run": name, **r})
        versus = "" if best_foolbox is None or r is best_foolbox else f"{per_image_ratio(r, best_foolbox):10.3f}"
        print(f"{name:48s} {r['wall_s']:8.1f} {r['images_per_s']:9,.0f} {100 * r['images_per_s'] / ceiling[b]:5.0f}% "
              f"{r['queries_median']:8,.0f} {r['median_l2']:10.3f} {r['median_mse']:11.2e} {versus}")

    best_foolbox = None
    settings = dict(args.set)  # of every row of ours
    priors = [p.strip() for p in args.priors.split(",") if p.strip()]
    refines = [None if v.strip() == "none" else v.strip() if v.strip() == "auto" else int(v)
               for v in args.refine_after.split(",") if v.strip()]
    starts = None
    if args.foolbox_starts == "ours" and not args.skip_foolbox:
        found = BoundaryAttack(steps=10**7, max_queries=START_QUERIES, starts=1,
                               progress=False)(model, x, Untargeted(y), seed=args.seed)
        if not bool(found.success.all()):
            raise SystemExit(f"ours found no adversarial start for {int((~found.success).sum())} images")
        starts = found.x_adv
        print(f"foolbox starts from ours after {START_QUERIES} evaluations: median L2 "
              f"{median(found.distance):.3f}")
    for steps in [int(s) for s in args.budgets.split(",")]:
        if args.skip_foolbox:  # the budgets are then ours' model evaluations per image
            budget = steps
        else:
            fb = attack_once(BoundaryAttack(steps=steps, candidates=1, backend="foolbox", progress=False),
                             model, x, y, args.seed, device, starting_points=starts)
            show(f"foolbox steps={steps}", fb, n)
            budget, best_foolbox = int(fb["queries_median"]), fb
        for prior, refine in itertools.product(priors, refines):
            ours = attack_once(BoundaryAttack(steps=10**7, candidates=args.candidates, max_queries=budget,
                                              prior=prior, refine_after=refine, progress=False, **settings),
                               model, x, y, args.seed, device)
            show(f"ours {prior} K={args.candidates} refine={refine} max_queries={budget}", ours, batch)
        if args.surrogate:
            ours = attack_once(BoundaryAttack(steps=10**7, candidates=args.candidates, max_queries=budget,
                                              prior=priors[0], surrogate=args.surrogate, progress=False, **settings),
                               model, x, y, args.seed, device)
            show(f"ours {priors[0]} + surrogate {args.surrogate} max_queries={budget}", ours, batch)
    for budget in [int(v) for v in args.ours_at.split(",") if v.strip()]:
        for prior in priors:
            ours = attack_once(BoundaryAttack(steps=10**7, candidates=args.candidates, max_queries=budget, prior=prior,
                                              progress=False, **settings), model, x, y, args.seed, device)
            show(f"ours {prior} K={args.candidates} max_queries={budget}", ours, batch)
    for steps in [int(v) for v in args.hopskipjump.split(",") if v.strip()]:
        hsj = hopskipjump_once(model, x, y, steps, args.seed, device, starting_points=starts)
        show(f"foolbox HopSkipJump steps={steps}", hsj, n)
        ours = attack_once(BoundaryAttack(steps=10**7, candidates=args.candidates, prior=priors[0],
                                          max_queries=int(hsj["queries_median"]), progress=False, **settings),
                           model, x, y, args.seed, device)
        show(f"ours {priors[0]} K={args.candidates} max_queries={int(hsj['queries_median'])}", ours, batch)
    if best_foolbox is not None:
        target = best_foolbox["median_l2"]  # how fast do we get to foolbox's best result?
        ours = attack_once(BoundaryAttack(steps=10**7, candidates=args.candidates, target_l2=target, prior=priors[0],
                                          max_queries=int(best_foolbox["queries_median"]), progress=False, **settings),
                           model, x, y, args.seed, device)
        show(f"ours {priors[0]} K={args.candidates} target_l2={target:.3g}", ours, batch)
        if ours["median_l2"] <= target * (1 + 1e-6):
            print(f"time to foolbox's best median L2: {ours['wall_s']:.1f} s vs {best_foolbox['wall_s']:.1f} s "
                  f"({best_foolbox['wall_s'] / ours['wall_s']:.1f}x)")
        else:
            print(f"foolbox's best median L2 {target:.3g} not reached within its model evaluations "
                  f"(ours ended at {ours['median_l2']:.3g})")
    again = {b: forward_ceiling(model, tuple(x.shape[1:]), b, device) for b in ceiling}
    print("forward ceiling at the end: " + ", ".join(f"batch {b}: {v:,.0f} img/s" for b, v in again.items())
          + " (the %ceil column used the start's value)")
    print(json.dumps({"bench": "boundary", "device": device_name(device), "model": args.model, "n": n,
                      "precision": args.precision, "rows": rows}))


if __name__ == "__main__":
    main()
