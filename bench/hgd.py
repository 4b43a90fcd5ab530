"""Benchmark: HGD (Liao et al., CVPR 2018) training throughput and the inference overhead of the
denoiser, against the classifier's own ceiling measured in the same run.

    python bench/hgd.py --device cuda                                   # MobileNetV2 (IMAGENET1K_V1), 224 px, DUNET width 1
    python bench/hgd.py --device cuda --model resnet50 --weights IMAGENET1K_V2
    python bench/hgd.py --device cpu --model fashion_cnn --width 0.25   # the lab's Fashion-MNIST CNN, 28 px

Images are real (the 20 foolbox ImageNet samples, or Fashion-MNIST), repeated to fill a batch.
The denoiser has freshly initialised weights: throughput does not depend on what it learned.
Rows: the classifier forward and forward + input-gradient ceilings; the denoiser alone; the
defended model (denoiser + classifier) forward, as the overhead of defending; a PGD step through
the defended model (the adaptive attack); pair generation (PGD-10 on the bare model, against the
gradient ceiling); a bare denoiser training step (the training ceiling) and one epoch of
`train_denoiser` per guidance variant (the real loop, with the frozen classifier's forward and
backward on top). Prints a table and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from advlab.attacks.gradient import pgd_linf
from advlab.core.defense import Defended
from advlab.core.device import apply_precision, device_name, resolve_device, synchronize
from advlab.data.sources import load_images
from advlab.defenses.dunet import DUNET
from advlab.defenses.hgd import HGD, save_checkpoint
from advlab.defenses.hgd_train import Split, TrainSettings, train_denoiser
from advlab.zoo.models import load_model
from advlab.zoo.smallnets import fashion_cnn
from advlab.zoo.wrappers import ImageClassifier


def rate(step: Callable[[], object], images: int, device: torch.device, seconds: float) -> float:
    """Images per second of `step` (which processes `images` images): two warm-up calls, three timed
    ones to size the run, then enough calls for `seconds` with one device sync at the end."""
    for _ in range(2):
        step()
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(3):
        step()
    synchronize(device)
    calls = max(1, round(seconds / ((time.perf_counter() - t0) / 3)))
    t0 = time.perf_counter()
    for _ in range(calls):
        step()
    synchronize(device)
    return calls * images / (time.perf_counter() - t0)


def classifier(name: str, weights: str | None, device: torch.device) -> tuple[ImageClassifier, str]:
    if name == "fashion_cnn":
        net = fashion_cnn()
        if weights:
            net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        model = ImageClassifier(net, name="fashion_cnn", weights=weights or "random init", mean=(0.5,), std=(0.5,),
                                input_size=28, class_names=[str(i) for i in range(10)], in_channels=1)
        data = "fashion-mnist:test"
    else:
        model = load_model(name, weights or "DEFAULT")
        data = "imagenet-samples"
    model = model.to(device).to(memory_format=torch.channels_last).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="torchvision name or fashion_cnn (default: mobilenet_v2 on a "
                   "GPU, fashion_cnn on a CPU)")
    p.add_argument("--weights", default=None, help="weights enum, or a state_dict file for fashion_cnn")
    p.add_argument("--width", type=float, default=None, help="DUNET width (default 1 on a GPU, 0.25 on a CPU)")
    p.add_argument("--batch-size", type=int, default=None, help="default 64 on a GPU, 32 on a CPU")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default=None, choices=["fp32", "tf32", "bf16"],
                   help="default bf16 on a GPU (autocast), fp32 on a CPU")
    p.add_argument("--seconds", type=float, default=3.0, help="timing window per row")
    p.add_argument("--train-images", type=int, default=None, help="images per training epoch (default 8x batch)")
    p.add_argument("--variants", default="pgd,fgd,lgd,cgd")
    args = p.parse_args()

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    name = args.model or ("mobilenet_v2" if gpu else "fashion_cnn")
    weights = args.weights or ("IMAGENET1K_V1" if name == "mobilenet_v2" else None)
    width = args.width or (1.0 if gpu else 0.25)
    bs = args.batch_size or (64 if gpu else 32)
    precision = args.precision or ("bf16" if gpu else "fp32")
    autocast = apply_precision(precision)
    model, data_source = classifier(name, weights, device)
    model.autocast_dtype = autocast
    data = load_images(data_source, model, n=min(bs, 1000))
    reps = -(-bs // len(data))
    x = data.x.repeat(reps, 1, 1, 1)[:bs].to(device).contiguous(memory_format=torch.channels_last)  # (B, C, H, W)
    y = torch.where(data.y >= 0, data.y, 0).repeat(reps)[:bs].to(device)

    with tempfile.TemporaryDirectory() as tmp:
        denoiser = DUNET(x.shape[1], width)
        checkpoint = save_checkpoint(Path(tmp) / "hgd.pt", denoiser, {"variant": "lgd"})
        hgd = HGD(checkpoint=str(checkpoint)).to(device).to(memory_format=torch.channels_last)
        defended = Defended(model, hgd).eval()
        params = sum(q.numel() for q in denoiser.parameters())

        def grad_step(net: nn.Module) -> Callable[[], object]:
            def step() -> object:
                xs = x.clone().requires_grad_(True)
                return torch.autograd.grad(net(xs).logsumexp(1).sum(), xs)
            return step

        rows: list[tuple[str, float]] = []
        with torch.no_grad():
            rows.append(("classifier forward (ceiling)", rate(lambda: model(x), bs, device, args.seconds)))
            rows.append(("denoiser alone forward", rate(lambda: defended.purify(x), bs, device, args.seconds)))
            rows.append(("defended forward (denoiser + classifier)",
                         rate(lambda: defended(x), bs, device, args.seconds)))
        rows.append(("classifier forward + input gradient (ceiling)", rate(grad_step(model), bs, device, args.seconds)))
        rows.append(("defended forward + input gradient (adaptive attack step)",
                     rate(grad_step(defended), bs, device, args.seconds)))
        eps = torch.full((bs,), 8 / 255, device=device)
        rows.append(("pair generation: PGD-10 on the bare model (image-steps/s)",
                     10 * rate(lambda: pgd_linf(model, x, y, eps, 10, eps / 4), bs, device, args.seconds)))

        trainable = DUNET(x.shape[1], width).to(device).to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(trainable.parameters(), lr=1e-3)

        def denoiser_step() -> None:  # the denoiser's own training cost, without the guidance model
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
                loss = (trainable(x).float() - x).abs().mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        rows.append(("denoiser forward + backward + Adam step (training ceiling)",
                     rate(denoiser_step, bs, device, args.seconds)))
        n_train = args.train_images or bs * 8
        split = Split(x.repeat(-(-n_train // bs), 1, 1, 1)[:n_train].cpu(),
                      x.repeat(-(-n_train // bs), 1, 1, 1)[:n_train].cpu().flip(-1),
                      y.repeat(-(-n_train // bs))[:n_train].cpu())
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            settings = TrainSettings(variant=variant, width=width, epochs=1, batch_size=bs)
            _, history = train_denoiser(model, split, Split(split.clean[:bs], split.adv[:bs], split.labels[:bs]),
                                        settings, Path(tmp) / f"state-{variant}.pt", device=device, progress=False)
            rows.append((f"HGD training, {variant} guidance (one epoch of train_denoiser)",
                         history[-1]["images_per_s"]))

    ceiling = rows[0][1]
    grad_ceiling = rows[3][1]
    print(f"device {device_name(device)} · {name} ({weights or 'random init'}) · input {tuple(x.shape[1:])} · "
          f"batch {bs} · {precision} · DUNET width {width} ({params / 1e6:.2f}M parameters)")
    print(f"| {'measurement':66s} | {'images/s':>10s} | {'of ceiling':>10s} |")
    print(f"|{'-' * 68}|{'-' * 12}|{'-' * 12}|")
    train_ceiling = next(v for label, v in rows if "training ceiling" in label)
    for label, value in rows:  # gradient rows against the gradient ceiling, training against the denoiser's own
        base = (train_ceiling if "training" in label else grad_ceiling if "gradient" in label or "PGD" in label
                else ceiling)
        print(f"| {label:66s} | {value:10.1f} | {value / base:9.1%} |")
    overhead = ceiling / rows[2][1] - 1
    print(f"inference overhead of the denoiser: +{overhead:.0%} time per image vs the classifier alone; "
          f"adaptive attack step: {rows[3][1] / rows[4][1]:.1f}x slower than on the bare model")
    print(json.dumps({"bench": "hgd", "device": device_name(device), "model": name, "width": width,
                      "batch_size": bs, "precision": precision, "dunet_params": params,
                      "rows": {label: round(value, 1) for label, value in rows},
                      "inference_overhead": round(overhead, 3)}))


if __name__ == "__main__":
    main()
