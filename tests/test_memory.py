"""The heap of a CPU run stays flat across batches (glibc): `release_freed_memory` hands freed pages
back once the resident size grows, and every streamed loop (`Images.groups`) calls it between batches.
Run in a fresh interpreter each, so that no other test's allocations are in the heap."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the release is glibc's malloc_trim")

FRAGMENTING_LOOP = """
import sys, torch
import advlab.core.device as device
import advlab.core.images as images
from advlab.core.images import TensorImages

if sys.argv[1] == "off":
    images.release_freed_memory = lambda: False
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
