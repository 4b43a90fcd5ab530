"""CPU allocator settings against throughput and the heap's address space (README, "CPU speed").

Each setting runs in a fresh interpreter: a pretrained-shape MobileNetV2 (random weights: the speed
and the memory do not depend on them) in channels_last, as the runner uses it, on `--batch-size`
images of 224 px; `--steps` FGSM-shaped steps (forward, backward of the loss to the input, a checking
forward), each followed by the release advlab makes between batches. It prints images/s (median of
the steps after the first two), the peak resident size and the heap's address space (VmData) after
the first and the last step.

    .venv/bin/python bench/allocator.py                 # both settings, batch 32, 40 steps
    .venv/bin/python bench/allocator.py --batch-size 16 --steps 80
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys

STEP = r"""
import statistics, sys, time
import torch, torchvision
import advlab.core.device as device

setting, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
if setting != "glibc":
    device.keep_freed_memory()
torch.manual_seed(0)
model = torchvision.models.mobilenet_v2().eval().to(memory_format=torch.channels_last)
for p in model.parameters():
    p.requires_grad_(False)
x = torch.rand(batch, 3, 224, 224).to(memory_format=torch.channels_last)
y = torch.randint(0, 1000, (batch,))

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) // 1024

walls, data = [], []
for step in range(steps):
    t0 = time.perf_counter()
    xs = x.clone().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(model(xs), y)
    grad, = torch.autograd.grad(loss, xs)
    with torch.no_grad():
        model((xs + 2 / 255 * grad.sign()).clamp(0, 1))
    walls.append(time.perf_counter() - t0)
    del xs, loss, grad
    if setting != "glibc":
        device.release_freed_memory()
    data.append(status("VmData:"))
print(batch / statistics.median(walls[2:]), status("VmHWM:"), data[0], data[-1])
"""

SETTINGS = {
    "glibc": "glibc's defaults (mmap and trim thresholds that adapt)",
    "advlab": "advlab's: freed memory kept for reuse (keep_freed_memory), released between batches once grown",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    print(f"MobileNetV2 (channels_last), batch {args.batch_size} at 224 px, {args.steps} FGSM-shaped steps, "
          f"{args.threads} threads")
    print("| setting | images/s | peak RSS (MiB) | VmData after step 1 / last (MiB) |")
    print("|---|---|---|---|")
    for setting in args.settings:
        out = subprocess.run([sys.executable, "-c", STEP, setting, str(args.batch_size), str(args.steps)],
                             capture_output=True, text=True, env=env, check=True).stdout.split()
        rate, peak, first, last = float(out[0]), int(out[1]), int(out[2]), int(out[3])
        print(f"| {setting}: {SETTINGS[setting]} | {rate:.1f} | {peak:,} | {first:,} / {last:,} |", flush=True)


if __name__ == "__main__":
    main()
