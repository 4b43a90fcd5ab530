"""Benchmark: does a run's memory and disk grow with the number of images? Peak resident memory of
the same attack over a small and a large image set, and the bytes written under the run's arrays/;
each run in its own process.

Two studies:

- `--photos` (the scaling issue's measure): real JPEG photos, foolbox's 20 ImageNet samples copied
  into class-index folders (N / 20 copies of each), attacked on pretrained MobileNetV2, at 400 and
  3,200 images (`--sizes`), two runs each (`--repeat`), median reported; beside it, in the same
  bench run, the model's own floor: importing torch and building the model, one bare
  forward+backward at the batch the attack feeds the model (the run's batch size, or the attack's
  own `batch_size` setting: the universal solver's minibatch of 128), and as many of them as the
  run has batches (released
  between batches as advlab does: the allocator's peak varies from batch to batch, so the most of
  100 batches lies above the first's); the lab's share is the run's peak minus the floor of its size.
  `--no-release` adds one run at the largest size without advlab's between-batch release of freed
  heap pages (`advlab.core.device.release_freed_memory`): what allocator fragmentation costs.
  Memory is the main process's peak RSS (`getrusage`); the decoding workers' share is sampled on
  the side (peak summed PSS of the process tree, sampled every second).
- generated images (the default): JPEG files of noise in a `folder:` (or a `tensors:` file), N and
  8N, random weights, or a dense task's default run (`--task`).

    python bench/memory.py --photos                                  # FGSM, 400 and 3,200 photos, 2 runs each
    python bench/memory.py --photos --method universal --set solver=sgd --set max_passes=1
    python bench/memory.py --photos --method boundary --set max_queries=10
    python bench/memory.py                    # FGSM on MobileNetV2 (random weights), N = 64 and 512
    python bench/memory.py -n 512 --source tensors
    python bench/memory.py --task segmentation   # FGSM on the lab's segmenter, fashion-scenes:test
    python bench/memory.py --task detection -n 8 --batch-size 8 --method dag   # DAG on the lab's detector

The goal of the scaling issue: the large run's peak within 1.25x of the small one's, and the lab's
share above the floor a constant few hundred MB. Prints a table and a JSON line.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
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


FLOOR = """
import resource, sys, torch, torchvision
from advlab.core.device import keep_freed_memory, release_freed_memory
keep_freed_memory()  # the allocator setting advlab runs the CPU under
name, batch, weights, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
net = torchvision.models.get_model(name, weights=weights).eval().to(memory_format=torch.channels_last)
peaks = [resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]
x = torch.rand(batch, 3, 224, 224).contiguous(memory_format=torch.channels_last)
for _ in range(steps):  # one attack step a batch: forward+backward to the input, then a checking forward
    p = x.clone().requires_grad_(True)
    logits = net(p)
    (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, logits.argmax(1)), p)
    with torch.no_grad():
        net(p + grad.sign() / 255)
    del p, logits, grad
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    release_freed_memory()  # between batches, as advlab's streamed loops do
print(peaks[0], peaks[1], peaks[-1])
"""

NO_RELEASE = ("import sys, advlab.core.device as d, advlab.core.images as i; "
              "d.release_freed_memory = i.release_freed_memory = lambda: False; "
              "from advlab.cli.main import main; sys.argv[0] = 'advlab'; main()")


def photo_folder(root: Path, n: int) -> Path:
    """n real JPEG photos in ImageNet class-index folders: foolbox's 20 ImageNet samples, n / 20 links
    to each (`imagenet_XX_LABEL.jpg`: LABEL is the class index)."""
    import foolbox

    photos = sorted((Path(foolbox.__file__).parent / "data").glob("imagenet_*.jpg"))
    if len(photos) != 20:
        raise SystemExit(f"found {len(photos)} of foolbox's 20 ImageNet samples; pip install foolbox==3.3.4")
    for i in range(n):
        photo = photos[i % len(photos)]
        folder = root / photo.stem.split("_")[-1]
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{i:06d}.jpg"
        try:
            os.link(photo, target)
        except OSError:  # another file system: copy
            shutil.copyfile(photo, target)
    return root


def _tree_pss_kib(pid: int) -> int:
    """Summed proportional set size of `pid` and its descendants (a page shared by k processes counts
    1/k in each): the memory of a run with its decoding workers, without counting shared pages twice."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    tree, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    total = 0
    for member in tree:
        try:
            for line in Path(f"/proc/{member}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


def measured(cmd: list[str], log: Path) -> tuple[int, int, float]:
    """Run `cmd` (stderr to `log`): (peak RSS KiB of its largest process, peak summed PSS KiB of its
    process tree sampled every second, wall seconds)."""
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        tree = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            tree = max(tree, _tree_pss_kib(proc.pid))
            time.sleep(1.0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{log.read_text()[-2000:]}")
    return usage.ru_maxrss, tree, time.perf_counter() - t0


def model_batch(method: str, settings: list[str], run_batch: int) -> int:
    """The most images the attack puts through the model at once: its own `batch_size` setting where it
    has one (the universal solver's minibatch, 128 by default), else the run's batch size."""
    from advlab.core.registry import get_attack

    given = dict(item.replace("-", "_", item.find("=")).split("=", 1) for item in settings)  # as advlab reads them
    if "batch_size" in given:
        return int(given["batch_size"])
    own = inspect.signature(get_attack(method).cls.__init__).parameters.get("batch_size")
    return own.default if own is not None and isinstance(own.default, int) else run_batch


def photos_study(args: argparse.Namespace) -> None:
    """The scaling issue's measure: pretrained model, real photos, `--sizes`, `--repeat` runs each."""
    batch = args.batch_size or 32
    step = model_batch(args.method, args.set, batch)  # the floor's batch: what the attack feeds the model
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        floors = {n: [subprocess.run([sys.executable, "-c", FLOOR, args.model, str(step), args.weights,
                                      str(-(-n // step))], capture_output=True, text=True, check=True).stdout.split()
                      for _ in range(args.repeat)] for n in args.sizes}
        model_mib = statistics.median(int(f[0]) for runs in floors.values() for f in runs) / 1024
        step_mib = statistics.median(int(f[1]) for runs in floors.values() for f in runs) / 1024
        floor_mib = {n: statistics.median(int(f[2]) for f in runs) / 1024 for n, runs in floors.items()}
        settings = [flag for item in args.set for flag in ("--set", item)]
        cases = [(n, True) for n in args.sizes] + ([(max(args.sizes), False)] if args.no_release else [])
        for n, release in cases:
            folder = photo_folder(root / f"photos-{n}", n) if not (root / f"photos-{n}").exists() else \
                root / f"photos-{n}"
            runs = []
            for r in range(args.repeat if release else 1):
                out = root / f"run-{n}-{r}-{int(release)}"
                cli = ["attack", "--method", args.method, "--model", args.model, "--weights", args.weights,
                       "--data", f"folder:{folder}", "-n", str(n), "--device", args.device, "--seed", "0",
                       "--batch-size", str(batch), "--out", str(out), *settings]
                launch = [sys.executable, "-m", "advlab.cli.main"] if release else [sys.executable, "-c", NO_RELEASE]
                rss, pss, wall = measured(launch + cli, root / f"{out.name}.log")
                arrays = sum(f.stat().st_size for f in (out / "arrays").rglob("*") if f.is_file())
                runs.append({"peak_rss_mib": rss / 1024, "tree_pss_mib": pss / 1024, "wall_s": wall,
                             "arrays_mib": arrays / 2**20, "results_kib": (out / "results.json").stat().st_size / 1024})
                shutil.rmtree(out)
            peak = statistics.median(run["peak_rss_mib"] for run in runs)
            rows.append({"n": n, "release": release, "runs": runs, "peak_rss_mib": peak,
                         "floor_mib": floor_mib[n], "lab_share_mib": peak - floor_mib[n],
                         "tree_pss_mib": statistics.median(run["tree_pss_mib"] for run in runs)})
    print(f"{args.method} {' '.join(args.set)} on {args.model} {args.weights}, batch {batch}, {args.device}, "
          f"{args.repeat} runs each, median")
    print(f"{'':26s} {'peak RSS MiB':>13s} {'runs':>13s} {'floor MiB':>10s} {'above floor':>12s} "
          f"{'tree PSS MiB':>13s} {'arrays MiB':>11s} {'wall s':>7s}")
    print(f"{'floor: torch + model':26s} {model_mib:13.0f}")
    print(f"{f'floor: + 1 fwd/bwd of {step}':26s} {step_mib:13.0f}")
    for row in rows:
        label = f"{row['n']} photos" + ("" if row["release"] else ", no release")
        runs = "/".join(f"{run['peak_rss_mib']:.0f}" for run in row["runs"])
        print(f"{label:26s} {row['peak_rss_mib']:13.0f} {runs:>13s} {row['floor_mib']:10.0f} "
              f"{row['lab_share_mib']:12.0f} {row['tree_pss_mib']:13.0f} {row['runs'][0]['arrays_mib']:11.1f} "
              f"{statistics.median(run['wall_s'] for run in row['runs']):7.0f}")
    small, large = (next(r for r in rows if r["n"] == n and r["release"]) for n in (min(args.sizes), max(args.sizes)))
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    print(f"peak {large['n']} / {small['n']}: {ratio:.2f}x (goal <= 1.25x)")
    print(json.dumps({"bench": "memory-photos", "method": args.method, "settings": args.set, "model": args.model,
                      "weights": args.weights, "batch_size": batch, "model_batch": step, "floor_model_mib": model_mib,
                      "floor_step_mib": step_mib, "rows": rows, "peak_ratio": ratio}))


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
    p.add_argument("--photos", action="store_true", help="the scaling study: real photos, pretrained model, "
                                                          "--sizes, --repeat, the model's floor beside")
    p.add_argument("--weights", default="IMAGENET1K_V1", help="--photos: the model's pretrained weights")
    p.add_argument("--sizes", type=int, nargs="+", default=[400, 3200], help="--photos: image counts")
    p.add_argument("--repeat", type=int, default=2, help="--photos: runs per size (median reported)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an attack setting, passed on")
    p.add_argument("--no-release", action="store_true",
                   help="--photos: one more run at the largest size without the release of freed heap pages")
    args = p.parse_args()
    if args.photos:
        photos_study(args)
        return
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
                               *(["--batch-size", str(args.batch_size)] if args.batch_size else []),
                               *(flag for item in args.set for flag in ("--set", item))])
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
