"""The lab's AutoAttack components and `standard` sequence against torchattacks 3.5.1 on the same images,
one run, robust accuracy and wall time side by side (Croce & Hein, ICML 2020).

Models: the lab's Fashion-MNIST CNN trained plainly and an adversarially trained copy (`robust_models.py`,
trained once and cached in reports/models/). torchattacks runs at the original's settings (100 iterations,
9 target classes, 5,000 Square queries; its own AutoAttack(version='standard') runs 10 iterations, so it is
shown as well, as the upper bound it is). Needs `pip install torchattacks==3.5.1` (make test installs it).

    .venv/bin/python bench/autoattack.py                       # 200 test images, eps 0.1, every table
    .venv/bin/python bench/autoattack.py -n 100 --square-queries 1000 --skip-fab
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))

from robust_models import fashion_pair

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.fab import FABT
from advlab.attacks.square import Square
from advlab.attacks.standard import Standard
from advlab.core.criteria import Untargeted
from advlab.data.sources import load_images


def timed(run: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    start = time.perf_counter()
    out = run()
    return out, time.perf_counter() - start


class NoisyInput(torch.nn.Module):
    """A randomised model: Gaussian noise on the input of every forward pass."""

    def __init__(self, model: torch.nn.Module, sigma: float) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x + self.sigma * torch.randn_like(x)).clamp(0.0, 1.0))


def accuracy_over_predictions(model: Any, x_adv: torch.Tensor, y: torch.Tensor, n: int, k: int = 10) -> float:
    """Accuracy over all n images averaged over k predictions (the same noise draws for every call)."""
    torch.manual_seed(1234)
    with torch.no_grad():
        return sum(float((model(x_adv).argmax(1) == y).sum()) for _ in range(k)) / (k * n)


def rand_row(name: str, model: Any, x: torch.Tensor, y: torch.Tensor, n: int, eps: float, sigma: float) -> None:
    """`standard` on a randomised model (its rand version: APGD-CE, APGD-DLR, EOT 20) at torchattacks' shipped
    settings (10 iterations) against torchattacks' AutoAttack(version='rand'), on the same images."""
    import torchattacks

    noisy = NoisyInput(model, sigma).eval()
    torch.manual_seed(0)
    ours, t_ours = timed(lambda: Standard(eps=eps, steps=10, eot_samples=20)(noisy, x, Untargeted(y), seed=0))
    torch.manual_seed(0)
    theirs, t_theirs = timed(lambda: torchattacks.AutoAttack(noisy, norm="Linf", eps=eps, version="rand",
                                                             n_classes=10, seed=0)(x, y))
    print(f"| {name} + noise {sigma:g} (clean {accuracy_over_predictions(noisy, x, y, n):.3f} over 10) | standard "
          f"rand version vs AutoAttack(version='rand'), 10 it., EOT 20 | linf {eps:g} | "
          f"{accuracy_over_predictions(noisy, ours.x_adv, y, n):.3f} | {t_ours:.1f} s | "
          f"{accuracy_over_predictions(noisy, theirs, y, n):.3f} | {t_theirs:.1f} s |", flush=True)


def robust_accuracy(model: Any, x_adv: torch.Tensor, y: torch.Tensor, n: int) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).sum()) / n


def main() -> None:
    import torchattacks

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=200, help="Fashion-MNIST test images (the first n)")
    p.add_argument("--eps", type=float, default=0.1, help="l_inf budget (the adversarial training used 0.1)")
    p.add_argument("--l2-eps", type=float, default=1.5)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--square-queries", type=int, default=5000)
    p.add_argument("--skip-fab", action="store_true", help="leave FAB-T out (its own row and torchattacks' sequence)")
    p.add_argument("--models", default="plain,madry")
    p.add_argument("--rand-sigma", type=float, default=0.1,
                   help="the randomised model's Gaussian input noise (its rows: `standard`'s rand version vs "
                        "torchattacks' AutoAttack(version='rand'), accuracy over 10 predictions per image); 0: skip")
    p.add_argument("--norms", default="linf,l2")
    args = p.parse_args()
    torch.manual_seed(0)
    models = dict(zip(("plain", "madry"), fashion_pair()))
    data = load_images("fashion-mnist:test", models["plain"], n=args.n)
    x_all, y_all = data.x, data.y
    print(f"{args.n} Fashion-MNIST test images, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"torchattacks {torchattacks.__version__}\n")
    print("| model | attack | threat | ours: robust acc. | ours: wall | torchattacks: robust acc. | torchattacks: wall |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models.split(","):
        model = models[name]
        with torch.no_grad():
            right = model(x_all).argmax(1) == y_all
        x, y, n = x_all[right], y_all[right], args.n
        crit = Untargeted(y)

        def row(attack: str, threat: str, ours: Callable[[], Any], theirs: Callable[[], torch.Tensor]) -> None:
            result, t_ours = timed(ours)
            adv, t_theirs = timed(theirs)
            print(f"| {name} (clean {right.float().mean():.3f}) | {attack} | {threat} | "
                  f"{robust_accuracy(model, result.x_adv, y, n):.3f} | {t_ours:.1f} s | "
                  f"{robust_accuracy(model, adv, y, n):.3f} | {t_theirs:.1f} s |", flush=True)

        for norm, eps, ta_norm in (("linf", args.eps, "Linf"), ("l2", args.l2_eps, "L2")):
            if norm not in args.norms.split(","):
                continue
            threat = f"{norm} {eps:g}"
            for loss in ("ce", "dlr"):
                row(f"APGD-{loss.upper()} ({args.steps} it.)", threat,
                    lambda: APGD(eps=eps, norm=norm, steps=args.steps, loss=loss)(model, x, crit, seed=0),
                    lambda: torchattacks.APGD(model, norm=ta_norm, eps=eps, steps=args.steps, n_restarts=1,
                                              loss=loss, seed=0)(x, y))
            row(f"APGD-T ({args.steps} it., 9 targets)", threat,
                lambda: APGDT(eps=eps, norm=norm, steps=args.steps)(model, x, crit, seed=0),
                lambda: torchattacks.APGDT(model, norm=ta_norm, eps=eps, steps=args.steps, n_restarts=1,
                                           n_classes=10, seed=0)(x, y))
            if not args.skip_fab:
                row(f"FAB-T ({args.steps} it., 9 targets)", threat,
                    lambda: FABT(eps=eps, norm=norm, steps=args.steps)(model, x, crit, seed=0),
                    lambda: torchattacks.FAB(model, norm=ta_norm, eps=eps, steps=args.steps, n_restarts=1,
                                             multi_targeted=True, n_classes=10, seed=0)(x, y))
            row(f"Square ({args.square_queries} queries)", threat,
                lambda: Square(eps=eps, norm=norm, max_queries=args.square_queries)(model, x, crit, seed=0),
                lambda: torchattacks.Square(model, norm=ta_norm, eps=eps, n_queries=args.square_queries, n_restarts=1,
                                            p_init=0.8, loss="margin", resc_schedule=True, seed=0)(x, y))
            sequence = [torchattacks.APGD(model, norm=ta_norm, eps=eps, steps=args.steps, n_restarts=1, loss="ce",
                                          seed=0),
                        torchattacks.APGDT(model, norm=ta_norm, eps=eps, steps=args.steps, n_restarts=1, n_classes=10,
                                           seed=0)]
            if not args.skip_fab:
                sequence.append(torchattacks.FAB(model, norm=ta_norm, eps=eps, steps=args.steps, n_restarts=1,
                                                 multi_targeted=True, n_classes=10, seed=0))
            sequence.append(torchattacks.Square(model, norm=ta_norm, eps=eps, n_queries=args.square_queries,
                                                n_restarts=1, p_init=0.8, loss="margin", resc_schedule=True, seed=0))
            label = "APGD-CE, APGD-T" + ("" if args.skip_fab else ", FAB-T") + ", Square"
            row(f"standard vs MultiAttack({label})", threat,
                lambda: Standard(eps=eps, norm=norm, steps=args.steps, square_queries=args.square_queries)(
                    model, x, crit, seed=0),
                lambda: torchattacks.MultiAttack(sequence)(x, y))
            if norm == "linf" and args.rand_sigma > 0:
                rand_row(name, model, x, y, n, eps, args.rand_sigma)
            if norm == "linf":
                adv, wall = timed(lambda: torchattacks.AutoAttack(model, norm=ta_norm, eps=eps, version="standard",
                                                                  n_classes=10, seed=0)(x, y))
                print(f"| {name} | torchattacks AutoAttack(version='standard') as shipped (10 it.) | {threat} | | | "
                      f"{robust_accuracy(model, adv, y, n):.3f} | {wall:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
