"""Benchmark: advlab's universal perturbations (DeepFool and SGD solvers) vs IBM ART 1.20's
`UniversalPerturbation` (DeepFool inner attack, one image at a time) on the same model, data and eps,
with held-out fooling ratios and the model's own gradient ceiling measured in the same run.

    pip install adversarial-robustness-toolbox packaging    # the peer, for this benchmark only
    python bench/universal.py                              # lab Fashion-MNIST CNN, CPU
    python bench/universal.py --model mobilenet_v2 --weights IMAGENET1K_V1 --data folder:/data/imagenet/train \\
        --eval-data folder:/data/imagenet/val -n 10000 --eval-n 10000 --eps 10/255 --skip-art --device cuda

Without --weights for the Fashion-MNIST CNN, the benchmark trains it first (about a minute).
Prints a table and one JSON line.
"""
from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction

import numpy as np
import torch
from torch import nn

from advlab.attacks.universal import UniversalPerturbation
from advlab.core.criteria import Untargeted
from advlab.core.device import apply_precision, device_name, resolve_device, synchronize
from advlab.data.sources import load_images
from advlab.tasks.classification import predict
from advlab.zoo.models import load_model
from advlab.zoo.smallnets import fashion_cnn, train_classifier
from advlab.zoo.wrappers import ImageClassifier


def gradient_ceiling(model: nn.Module, x: torch.Tensor, device: torch.device, seconds: float = 3.0) -> float:
    """Images per second of forward + backward to the input at this batch (what bounds a white-box attack)."""
    x = x.to(device).clone().requires_grad_(True)
    n, t0 = 0, None
    for i in range(1000):
        if i == 2:
            synchronize(device)
            n, t0 = 0, time.perf_counter()
        torch.autograd.grad(model(x).logsumexp(dim=1).sum(), x)
        n += x.shape[0]
        if t0 is not None and time.perf_counter() - t0 > seconds:
            break
    synchronize(device)
    return n / (time.perf_counter() - t0)


def fooling(model: nn.Module, x: torch.Tensor, v: torch.Tensor, clean: torch.Tensor, device: torch.device) -> float:
    adv = predict(model, (x + v.cpu()).clamp(0, 1), 500, device).label
    return float((adv != clean).float().mean())


def lab_fashion_model(weights: str | None, device: torch.device) -> ImageClassifier:
    net = fashion_cnn()
    model = ImageClassifier(net, name="fashion_cnn", weights=weights or "trained by the bench", mean=(0.5,),
                            std=(0.5,), input_size=28, class_names=[str(i) for i in range(10)], in_channels=1)
    if weights:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    else:
        torch.manual_seed(0)
        train = load_images("fashion-mnist:train", model, n=20000)  # images 0..20k; X is drawn after them
        train_classifier(net, train.x, train.y, epochs=2)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval().to(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="fashion_cnn", help="fashion_cnn (the lab's) or a torchvision name")
    p.add_argument("--weights", default=None)
    p.add_argument("--data", default="fashion-mnist:train")
    p.add_argument("--eval-data", default="fashion-mnist:test")
    p.add_argument("-n", type=int, default=1000, help="images X the perturbation is computed on")
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--offset", type=int, default=20000, help="skip the first images of --data (model training)")
    p.add_argument("--eps", default="0.1", help="l_inf budget, e.g. 0.1 or 10/255")
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--art-n", type=int, default=None, help="images for ART (default: -n)")
    p.add_argument("--skip-art", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    eps = float(Fraction(args.eps))
    device = resolve_device(args.device)
    autocast = apply_precision(args.precision)
    if args.model == "fashion_cnn":
        model = lab_fashion_model(args.weights, device)
    else:
        model = load_model(args.model, args.weights or "DEFAULT").to(device)
        model.autocast_dtype = autocast
    offset = args.offset if args.data.startswith("fashion-mnist") else 0
    data = load_images(args.data, model, n=offset + args.n)
    x = data.x[offset:]
    held = load_images(args.eval_data, model, n=args.eval_n)
    clean_x = predict(model, x, 500, device).label
    clean_h = predict(model, held.x, 500, device).label
    ceiling = gradient_ceiling(model, x[:128], device)
    print(f"device {device_name(device)}, model {model.name}, X = {x.shape[0]} images of {tuple(x.shape[1:])}, "
          f"held-out {held.x.shape[0]}, l_inf eps {eps:.4g}, clean accuracy on held-out "
          f"{float((clean_h == held.y).float().mean()):.3f}")
    print(f"gradient ceiling (forward + input gradient, batch 128): {ceiling:,.0f} img/s")
    header = f"{'run':28s} {'n':>6s} {'wall s':>8s} {'passes':>6s} {'fool X':>7s} {'fool held-out':>13s} {'img/s':>9s} {'%ceil':>6s}"
    print(header)
    print("-" * len(header))
    rows = []

    def show(name: str, n: int, wall: float, passes: int | None, fool_x: float, fool_h: float,
             images: float | None) -> None:
        rate = images / wall if images else None
        rows.append({"run": name, "n": n, "wall_s": wall, "passes": passes, "fooling_train": fool_x,
                     "fooling_held_out": fool_h, "images_per_s": rate, "ceiling": ceiling})
        cells = f"{rate:9,.0f} {100 * rate / ceiling:5.0f}%" if rate else f"{'—':>9s} {'—':>6s}"
        shown = f"{passes:6d}" if passes is not None else f"{'—':>6s}"
        print(f"{name:28s} {n:6d} {wall:8.1f} {shown} {fool_x:7.3f} {fool_h:13.3f} {cells}")

    xd = x.to(device)
    for solver in ("random", "deepfool", "sgd"):
        attack = UniversalPerturbation(solver=solver, norm="linf", eps=eps, max_passes=args.passes, progress=False)
        synchronize(device)
        t0 = time.perf_counter()
        r = attack(model, xd, Untargeted(clean_x.to(device)), seed=args.seed)
        synchronize(device)
        wall = time.perf_counter() - t0
        v = r.extras["perturbation"]
        show(f"advlab {solver}", x.shape[0], wall, int(r.extras["passes"]), fooling(model, x, v, clean_x, device),
             fooling(model, held.x, v, clean_h, device), float(r.queries.sum()))

    if not args.skip_art:
        from art.attacks.evasion import UniversalPerturbation as ArtUAP
        from art.estimators.classification import PyTorchClassifier

        art_n = args.art_n or x.shape[0]
        classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                       nb_classes=model.num_classes, clip_values=(0.0, 1.0),
                                       device_type="gpu" if device.type == "cuda" else "cpu")
        art = ArtUAP(classifier, attacker="deepfool", attacker_params={"verbose": False}, delta=0.2,
                     max_iter=args.passes, eps=eps, norm=np.inf, verbose=False)
        np.random.seed(args.seed)
        t0 = time.perf_counter()
        art.generate(x[:art_n].numpy())
        wall = time.perf_counter() - t0
        v = torch.from_numpy(np.asarray(art.noise, dtype=np.float32)).reshape(x.shape[1:])
        show("ART 1.20 deepfool", art_n, wall, None, fooling(model, x[:art_n], v, clean_x[:art_n], device),
             fooling(model, held.x, v, clean_h, device), None)
    print(json.dumps({"bench": "universal", "device": device_name(device), "model": model.name, "eps": eps,
                      "rows": rows}))


if __name__ == "__main__":
    main()
