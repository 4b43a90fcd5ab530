"""Benchmark: does a run's memory and disk grow with the number of images? Peak resident memory of
the same attack over N and 8N images of 224 px, and the bytes written under the run's arrays/; each
run in its own process. The images are generated: JPEG files of noise in a `folder:` (decoded on
demand in DataLoader workers, the path of a real validation set), or a `tensors:` file of uint8.

    python bench/memory.py                    # FGSM on MobileNetV2 (random weights), N = 64 and 512
    python bench/memory.py -n 512 --source tensors
    python bench/memory.py -n 128 --method pgd --device cuda
    python bench/memory.py --task segmentation   # FGSM on the lab's segmenter, fashion-scenes:test
    python bench/memory.py --task detection -n 8 --batch-size 8 --method dag   # DAG on the lab's detector

The goal of the scaling issue: the 8N run's peak within 1.25x of the N run's. Prints a table and a
JSON line.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

PEAK = ("import resource, subprocess, sys; rc = subprocess.run(sys.argv[1:]).returncode; "
        "print(rc, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def images_file(path: Path, n: int, side: int) -> Path:
    """n uint8 noise images (n, 3, side, side) in a tensors: file (no labels: the model's own predictions)."""
    gen = torch.Generator().manual_seed(0)
    torch.save({"x": torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=gen)}, path)
    return path


def images_folder(root: Path, n: int, side: int) -> Path:
    """n JPEG files of uint8 noise, side x side, in class folders 0..9 (ImageNet class indices)."""
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for i in range(n):
        folder = root / str(i % 10)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (side, side, 3), dtype=torch.uint8, generator=gen).numpy()
        Image.fromarray(pixels).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def peak_run(args: list[str]) -> tuple[int, int]:
    """(exit status, peak resident KiB) of `advlab ARGS` in a child process."""
    out = subprocess.run([sys.executable, "-c", PEAK, sys.executable, "-m", "advlab.cli.main", *args],
                         capture_output=True, text=True, check=False)
    rc, kib = out.stdout.strip().splitlines()[-1].split()
    if int(rc) != 0:
        raise SystemExit(f"advlab {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return int(rc), int(kib)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=64, help="the small run's images (the large one has 8x)")
    p.add_argument("--side", type=int, default=224)
    p.add_argument("--method", default="fgsm")
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--device", default="cpu")
    p.add_argument("--source", choices=["folder", "tensors"], default="folder")
    p.add_argument("--batch-size", type=int, help="the run's batch size (default: advlab's); the small run "
                                                   "must fill a batch, or the batch size is what grows")
    p.add_argument("--task", help="a task with a default run (segmentation, detection): its model on its data "
                                  "(fashion-scenes) instead of generated images")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model: list[str] = ["--model", args.model, "--weights", "none"]
        if args.task:
            model, data = ["--task", args.task], ""  # the task's default run: its model, its data
        elif args.source == "folder":
            data = f"folder:{images_folder(root / 'images', 8 * args.n, args.side)}"
        else:
            data = f"tensors:{images_file(root / 'images.pt', 8 * args.n, args.side)}"
        print(f"{'images':>7s} {'peak RSS MiB':>13s} {'arrays/ MiB':>12s} {'results.json KiB':>17s}")
        for n in (args.n, 8 * args.n):
            run = root / f"run-{n}"
            _, kib = peak_run(["attack", "--method", args.method, *model, *(["--data", data] if data else []),
                               "-n", str(n), "--device", args.device, "--out", str(run),
                               *(["--batch-size", str(args.batch_size)] if args.batch_size else [])])
            arrays = sum(f.stat().st_size for f in (run / "arrays").rglob("*") if f.is_file())
            results = (run / "results.json").stat().st_size
            rows.append({"n": n, "peak_rss_mib": kib / 1024, "arrays_mib": arrays / 2**20,
                         "results_kib": results / 1024})
            print(f"{n:7d} {kib / 1024:13.0f} {arrays / 2**20:12.1f} {results / 1024:17.0f}")
    ratio = rows[1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    disk = rows[1]["arrays_mib"] / rows[0]["arrays_mib"]
    print(f"peak 8N / N: {ratio:.2f}x (goal <= 1.25x); arrays 8N / N: {disk:.1f}x")
    print(json.dumps({"bench": "memory", "method": args.method, "model": args.model, "task": args.task,
                      "source": args.source,
                      "rows": rows,
                      "peak_ratio": ratio}))


if __name__ == "__main__":
    main()
