"""Memory on the CPU (glibc). The heap of a run stays flat across batches: `release_freed_memory` hands
freed pages back once the resident size grows, and every streamed loop (`Images.groups`) calls it
between batches in a process that opted in (`manage_heap`, as the command line does), and nothing of a batch outlives it to pin the heap's holes (`advlab.core.per_image`).
A batch the allocator refuses is one line naming a smaller --batch-size. Each case runs in a fresh
interpreter, so that no other test's allocations are in its heap."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc_trim and Linux's address-space limit")

FRAGMENTING_LOOP = """
import sys, torch
import advlab.core.device as device
from advlab.core.images import TensorImages

if sys.argv[1] == "on":
    device.manage_heap()  # what the command line opts in to for its runs
else:
    device.keep_freed_memory()

def resident_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * device._PAGE / 2**20

MIB = 1 << 18  # float32 elements in a MiB
start, peak, kept = resident_mib(), 0.0, []
for k, batch in enumerate(TensorImages(torch.zeros(12, 1, 2, 2)).batches(1)):
    work = torch.empty((256 + k) * MIB).fill_(1.0)  # a batch's activations, larger than any hole before it
    peak = max(peak, resident_mib() - start)
    kept.append(torch.empty((512 + k) * MIB))  # outlives the batch; larger than any free chunk, so it comes from
    # the heap's top, above the work; never written, so it holds address space but no resident pages
    del work  # a hole pinned below the keeper, which no later batch fits in
print(round(peak))
"""


def _peak_growth_mib(release: str) -> int:
    out = subprocess.run([sys.executable, "-c", FRAGMENTING_LOOP, release], capture_output=True, text=True,
                         check=True)
    return int(out.stdout.split()[-1])


def test_a_streamed_loop_hands_freed_heap_pages_back_between_batches():
    """Twelve batches of 256 MiB of work, each leaving a hole the next cannot reuse (the fragmentation
    of a CPU attack, built here so that it does not depend on the heap's layout before the loop):
    without the release the resident size keeps every hole (3 GiB); with it, about two batches' work."""
    without, with_release = _peak_growth_mib("off"), _peak_growth_mib("on")
    assert without > 2500, without  # the pattern does fragment: the test can fail
    assert with_release < 800, with_release


ATTACK_RUN = """
import tempfile
from pathlib import Path
import torch, torchvision
import advlab.core.device as device
from advlab.attacks.gradient import FGSM
from advlab.core.criteria import Untargeted
from advlab.run import chunks

device.keep_freed_memory()

def heap_mib():  # the extent of the heap (brk), resident or not
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if fields[-1] == "[heap]":
                start, end = (int(a, 16) for a in fields[0].split("-"))
                return (end - start) >> 20

extents, save = [], chunks.atomic.save_tensors
def saved(part, path, **kw):  # after each chunk
    save(part, path, **kw)
    extents.append(heap_mib())
chunks.atomic.save_tensors = saved
torch.manual_seed(0)
model = torchvision.models.mobilenet_v2(num_classes=10).eval()
x, y = torch.rand(400, 3, 224, 224), torch.randint(0, 10, (400,))
with tempfile.TemporaryDirectory() as folder:
    chunks.attack_in_chunks(FGSM(eps=2 / 255), model, x, Untargeted(y), starting_points=None, batch_size=16,
                            device=torch.device("cpu"), seed=0, chunk_dir=Path(folder))
print(extents[4], extents[-1])
"""


def test_an_attack_run_keeps_the_heap_s_extent_flat_across_its_chunks():
    """FGSM on MobileNetV2 over 25 chunks of 16 images at 224 px: the per-image numbers of each chunk
    go into arrays allocated once, so no small tensor of a chunk is carved out of the holes its
    activations left, and the heap's extent after the 25th chunk is that after the 5th. (Kept as a
    list of per-chunk tensors, as before, it grew 450 MiB over those 20 chunks, ~60 MiB per batch
    in a real 1,600-photo run: tens of GB of address space at 50,000 photos.)"""
    out = subprocess.run([sys.executable, "-c", ATTACK_RUN], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    fifth, last = (int(v) for v in out.stdout.split()[-2:])
    assert last - fifth < 128, (fifth, last)


OUT_OF_MEMORY = """
import resource, sys
import torch, torchvision  # noqa: F401  (their libraries' address space is not the run's)
from advlab.cli.main import main

with open("/proc/self/status") as f:
    size = next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + (3 << 30),) * 2)  # 3 GiB more address space: the allocator refuses
sys.exit(main(sys.argv[1:]))
"""


def test_a_batch_that_does_not_fit_is_one_line_naming_the_batch_size_that_halves_it(tmp_path):
    """An attack whose batch does not fit (here: 3 GiB of address space for FGSM on MobileNetV2 over
    64 images of 224 px at once, about 6 GB of activations) ends with one line naming the halved
    --batch-size, exit 2, instead of an "internal error"; at that batch size the run fits."""
    data = tmp_path / "noise.pt"
    torch.save({"x": torch.randint(0, 256, (64, 3, 224, 224), dtype=torch.uint8,
                                   generator=torch.Generator().manual_seed(0))}, data)
    args = ["attack", "--method", "fgsm", "--model", "mobilenet_v2", "--weights", "none", "--data", f"tensors:{data}",
            "--device", "cpu", "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    fails = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, *args, "--batch-size", "64", "--out",
                            str(tmp_path / "big")], capture_output=True, text=True, env=env)
    assert fails.returncode == 2, fails.stderr[-2000:]
    lines = [line for line in fails.stderr.splitlines() if line.startswith("advlab: error:")]
    assert len(lines) == 1 and "a batch of 64 images does not fit in memory" in lines[0], fails.stderr[-2000:]
    assert "--batch-size 32" in lines[0] and "internal error" not in fails.stderr
    fits = subprocess.run([sys.executable, "-c", OUT_OF_MEMORY, *args, "--batch-size", "8", "-n", "16",
                           "--out", str(tmp_path / "small")], capture_output=True, text=True, env=env)
    assert fits.returncode == 0, fits.stderr[-2000:]
