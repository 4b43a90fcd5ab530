"""Where a Boundary Attack's evaluations go: the walk's median L2 at the start and end of each level of
the prior's grid (coarse to fine, `BoundaryAttack.refine_after`), the evaluations spent there and the
share of the run's L2 reduction each level brought, on the Fashion-MNIST CNN pair of
bench/robust_models.py (plain and adversarially trained), from the per-image traces of one run.

    python bench/boundary_trace.py                                  # 5,000 evaluations, default settings
    python bench/boundary_trace.py --set refine_after=90 --set source_factor=1

Read from the attack's own traces (median L2 over the images at each compaction, every `compact_every`
steps), so a level's edges are within 10 steps of where the grid switched; the evaluations column counts the
walk's (the start search comes before level 0). Prints a table per model.
"""
from __future__ import annotations

import argparse
import itertools

import torch
from robust_models import fashion_pair

from advlab.attacks.boundary import BoundaryAttack
from advlab.attacks.boundary_steps import grid_level, level_start, refine_interval
from advlab.core.criteria import Untargeted
from advlab.core.settings import key_value
from advlab.data.sources import load_images


def level_starts(every: int, budget: int) -> list[int]:
    """Evaluations per image at which grid levels 1, 2, ... start, below the budget."""
    return list(itertools.takewhile(lambda start: start < budget, (level_start(every, lv) for lv in itertools.count(1))))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=int, default=5000, help="model evaluations per image")
    p.add_argument("-n", type=int, default=20, help="test images (the ones each model gets right are attacked)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   type=lambda text: key_value(text, f"--set {text!r}", "--set refine_after=90"),
                   help="a Boundary Attack setting, e.g. refine_after=90")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(2)
    settings = dict(args.set)
    for name, model in zip(("plain", "adversarially trained"), fashion_pair(), strict=True):
        data = load_images("fashion-mnist:test", model, n=args.n)
        with torch.no_grad():
            right = model(data.x).argmax(1) == data.y
        x, y = data.x[right], data.y[right]
        attack = BoundaryAttack(steps=10**7, max_queries=args.budget, progress=False, **settings)
        r = attack(model, x, Untargeted(y), seed=args.seed)
        l2 = r.traces["l2"].median(dim=1).values  # (T,) lower median, as torch gives it: the start, then per compaction
        side = max(x.shape[2:])
        # trace point t > 0 follows step t * compact_every - 1 (the walk's steps, which set the grid level)
        level = torch.tensor([0] + [grid_level(attack, t * attack.compact_every - 1, side) for t in range(1, len(l2))])
        every = attack.refine_after if attack.refine_after != "auto" else refine_interval(side)
        edges = [0, *level_starts(every, args.budget), args.budget] if attack.refine_after is not None else \
            [0, args.budget]
        total = float(l2[0] - l2[-1])
        print(f"\n{name} CNN, {x.shape[0]} images, {args.budget:,} evaluations, settings {settings or 'default'}")
        print(f"{'level':>5s} {'walk evals':>13s} {'median L2 in':>13s} {'out':>7s} {'share of the reduction':>23s}")
        for lv, (lo, hi) in enumerate(itertools.pairwise(edges)):
            inside = (level == lv).nonzero().squeeze(1)
            if inside.numel() == 0:
                continue
            first, last = max(int(inside[0]) - 1, 0), int(inside[-1])
            drop = float(l2[first] - l2[last])
            print(f"{lv:5d} {lo:6,d}-{hi:<6,d} {float(l2[first]):13.3f} {float(l2[last]):7.3f} "
                  f"{100 * drop / total:22.0f}%")


if __name__ == "__main__":
    main()
