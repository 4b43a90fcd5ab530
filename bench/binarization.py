"""The binarization test (Zimmermann et al., NeurIPS 2022) on the Fashion-MNIST CNN pair of
`bench/robust_models.py` (plain and adversarially trained), at l_inf 0.1: per evaluation (an attack, bare or
through a defense), the robust accuracy it reports on the first 50 correctly classified test images whose eps
balls are disjoint, and the share of those images' binarized models it fools, with the paper's verdict
(passes at 95%) and the time to build the binarized models and to attack them.

    python bench/binarization.py [--images 50]
"""
from __future__ import annotations

import argparse
import time

import torch
from robust_models import fashion_pair

from advlab.attacks.apgd import APGD
from advlab.attacks.gradient import PGD
from advlab.attacks.standard import Standard
from advlab.core.attack import Attack
from advlab.core.binarized import binarize, head_of, inner_count, separated
from advlab.core.criteria import Untargeted
from advlab.core.defense import Defended
from advlab.core.threat import ThreatModel
from advlab.data.sources import load_images
from advlab.defenses.transforms import JPEG, BitDepth
from advlab.run.binarization import PASS_RATE

THREAT = ThreatModel("linf", 0.1)


def evaluations() -> list[tuple[str, Attack, torch.nn.Module | None]]:
    """(label, attack, defense or None): sound evaluations and broken ones."""
    return [("standard", Standard(eps=0.1), None),
            ("apgd-ce", APGD(eps=0.1), None),
            ("pgd, 40 steps", PGD(eps=0.1, steps=40), None),
            ("pgd, step 1e-4 (broken)", PGD(eps=0.1, steps=10, step_size=1e-4), None),
            ("standard through jpeg q75, BPDA", Standard(eps=0.1), JPEG(quality=75)),
            ("pgd through bit depth 2, BPDA", PGD(eps=0.1, steps=40), BitDepth(bits=2)),
            ("pgd through bit depth 2, no BPDA (broken)", PGD(eps=0.1, steps=40), BitDepth(bits=2, bpda=False)),
            ("standard through bit depth 2, no BPDA", Standard(eps=0.1), BitDepth(bits=2, bpda=False))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50)
    args = parser.parse_args()
    plain, madry = fashion_pair()
    print("| model | evaluation | robust accuracy | binarized models fooled | test | build | attack |")
    print("|---|---|---|---|---|---|---|")
    for name, model in (("plain", plain), ("adv. trained", madry)):
        test = load_images("fashion-mnist:test", model, n=1000)
        for label, attack, defense in evaluations():
            attacked = Defended(model, defense).eval() if defense is not None else model
            with torch.no_grad():
                right = attacked(test.x).argmax(1) == test.y
            x, y = test.x[right], test.y[right]
            keep = separated(x, THREAT, args.images)
            x, y = x[keep], y[keep]
            result = attack(attacked, x, Untargeted(y), seed=0)
            robust = 1 - float(result.success.float().mean())
            head = head_of(model, 10)
            start = time.perf_counter()
            binarized, valid = binarize(attacked, head, x, THREAT, seed=0, inner=inner_count(head.in_features),
                                        batch_size=256)
            built = time.perf_counter() - start
            kept = x[valid]
            start = time.perf_counter()
            found = attack(binarized, kept, Untargeted(torch.zeros(len(kept), dtype=torch.long)), seed=0)
            spent = time.perf_counter() - start
            size = (found.x_adv - kept).flatten(1).abs().amax(1)
            rate = float((found.success & THREAT.within(size)).float().mean())
            verdict = "passed" if rate >= PASS_RATE else "FAILED"
            print(f"| {name} | {label} | {robust:.3f} | {rate:.0%} of {len(kept)} | {verdict} | {built:.1f} s | "
                  f"{spent:.1f} s |", flush=True)


if __name__ == "__main__":
    main()
