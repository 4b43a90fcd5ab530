"""The Boundary Attack on held-out Fashion-MNIST images, against foolbox's BoundaryAttack and a white-box
reference: how far each is from the smallest perturbation a gradient attack finds.

    python bench/boundary_heldout.py                        # test images 20-99, ours up to 20,000 evaluations
    python bench/boundary_heldout.py --foolbox-steps 0 --set source_factor=1 --model plain

The tuning runs of issue 37 used the first 20 test images (`bench/boundary.py`); these are the next 80, so a
setting chosen there is checked on images it was not chosen on. For each CNN of bench/robust_models.py
(plain, and PGD-trained at l_inf 0.1), on the images it classifies correctly:

- white box: per image the smaller L2 of foolbox's DDN (Rony et al., CVPR 2019) and Carlini-Wagner L2
  (IEEE S&P 2017), 1,000 steps each (9 binary-search steps for C&W): not a lower bound, a reference;
- foolbox's BoundaryAttack at `--foolbox-steps` (one evaluation per step, plus every 10th step's orthogonal
  check); on the PGD-trained CNN its blended-noise start finds nothing, so it starts where ours is after
  100 evaluations, as in bench/boundary.py;
- ours, one run with the given settings, read from its per-image traces at each of `--budgets`.

Each row: median L2, and the geometric means over the images of the L2 over foolbox's and over the white
box's (over the images both found an adversarial for). One thread per process, so the two models can run
side by side on two cores (`--model`).
"""
from __future__ import annotations

import argparse
import time

import foolbox
import torch
from boundary import START_QUERIES, geometric_mean_ratio
from robust_models import fashion_pair

from advlab.attacks.boundary import BoundaryAttack
from advlab.core.criteria import Untargeted
from advlab.core.settings import key_value
from advlab.core.stats import median
from advlab.data.sources import load_images


def white_box(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) the smaller L2 of DDN and C&W L2 per image (inf where neither found an adversarial)."""
    fmodel = foolbox.PyTorchModel(model.eval(), bounds=(0, 1))
    best = torch.full((x.shape[0],), float("inf"))
    for attack in (foolbox.attacks.DDNAttack(steps=1000),
                   foolbox.attacks.L2CarliniWagnerAttack(steps=1000, binary_search_steps=9)):
        adv = attack(fmodel, x, y, epsilons=None)[0]
        with torch.no_grad():
            fooled = model(adv).argmax(1) != y
        l2 = (adv - x).flatten(1).norm(dim=1)
        best = torch.where(fooled, torch.minimum(best, l2), best)
    return best


def at_budget(traces: dict[str, torch.Tensor], budget: int) -> torch.Tensor:
    """(N,) each image's L2 once it had spent at most `budget` evaluations, from (T, N) traces."""
    queries, l2 = traces["queries"], traces["l2"]
    last = (queries <= budget).sum(0) - 1  # (N,) the last trace point within the budget
    return l2[last, torch.arange(l2.shape[1])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--first", type=int, default=20, help="first test image (the ones before are the tuning set)")
    p.add_argument("--last", type=int, default=100, help="test images up to this index (exclusive)")
    p.add_argument("--budgets", default="1000,5000,10000,20000", help="evaluations per image to read ours at")
    p.add_argument("--foolbox-steps", type=int, default=20000, help="0 skips foolbox's BoundaryAttack")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   type=lambda text: key_value(text, f"--set {text!r}", "--set source_factor=1"),
                   help="a Boundary Attack setting of ours, e.g. source_factor=1")
    p.add_argument("--model", choices=("plain", "PGD-trained", "both"), default="both")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    settings = dict(args.set)
    for name, model in zip(("plain", "PGD-trained"), fashion_pair(), strict=True):
        if args.model not in (name, "both"):
            continue
        data = load_images("fashion-mnist:test", model, n=args.last)
        x, y = data.x[args.first:], data.y[args.first:]
        with torch.no_grad():
            right = model(x).argmax(1) == y
        x, y = x[right], y[right]
        start = time.perf_counter()
        reference = white_box(model, x, y)
        print(f"\n{name} CNN, test images {args.first}-{args.last - 1}, {x.shape[0]} classified right; "
              f"white box {time.perf_counter() - start:.0f} s, settings {settings or 'default'}, seed {args.seed}")
        print(f"{'run':40s} {'median L2':>9s} {'vs foolbox':>10s} {'vs white box':>12s} {'wall s':>7s}")
        print(f"{'white box (DDN, C&W L2)':40s} {median(reference):9.3f} {'':>10s} {1:12.3f}")
        theirs = None
        if args.foolbox_steps:
            starts = None
            if name == "PGD-trained":
                starts = BoundaryAttack(steps=10**7, max_queries=START_QUERIES, progress=False)(
                    model, x, Untargeted(y), seed=args.seed).x_adv
            start = time.perf_counter()
            r = BoundaryAttack(steps=args.foolbox_steps, backend="foolbox", progress=False)(
                model, x, Untargeted(y), seed=args.seed, starting_points=starts)
            theirs = r.distance
            print(f"{f'foolbox BoundaryAttack, {args.foolbox_steps:,} steps':40s} {median(theirs):9.3f} "
                  f"{1:10.3f} {geometric_mean_ratio(theirs, reference):12.3f} {time.perf_counter() - start:7.0f}")
        start = time.perf_counter()
        r = BoundaryAttack(steps=10**7, max_queries=budgets[-1], progress=False, **settings)(
            model, x, Untargeted(y), seed=args.seed)
        wall = time.perf_counter() - start
        for budget in budgets:
            ours = at_budget(r.traces, budget)
            versus = f"{geometric_mean_ratio(ours, theirs):10.3f}" if theirs is not None else f"{'-':>10s}"
            print(f"{f'ours at {budget:,} evaluations':40s} {median(ours):9.3f} {versus} "
                  f"{geometric_mean_ratio(ours, reference):12.3f} {f'{wall:7.0f}' if budget == budgets[-1] else ''}")


if __name__ == "__main__":
    main()
