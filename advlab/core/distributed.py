"""Runs sharded across processes with torch.distributed, launched by torchrun (no scheduler of ours):

    torchrun --nproc-per-node K -m advlab run CONFIG.yaml

Every rank loads the same models and data and walks the same experiment. Each attack's chunks (the
runner's unit of checkpointing, `advlab.run.chunks.attack_in_chunks`) are dealt out by index, chunk k
to rank k mod K; a rank computes and saves only its own, then all ranks meet at a barrier and read
every chunk from the shared run directory, so the rows that follow are the same on every rank.
Only rank 0 writes anything else (config.yaml, results.json, arrays/, the report). Because an
image's result depends on the seed and its own pixels only, and chunk boundaries on the batch size
only, the merged results equal a single-process run's, and `--resume` works with any K.

The process group uses gloo (it only carries barriers and the run directory's name); on CUDA each
rank takes the GPU of its LOCAL_RANK.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

TIMEOUT = timedelta(hours=6)  # a barrier waits for the slowest rank's chunks


def init_from_env() -> None:
    """Join the process group torchrun describes in the environment (WORLD_SIZE > 1); no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("gloo", timeout=TIMEOUT)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def from_main(value: str | None) -> str | None:
    """Rank 0's `value` on every rank (e.g. the run directory it created)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mine(index: int | torch.Tensor) -> bool | torch.Tensor:
    """Whether chunk (or item) `index` is this rank's to compute; elementwise for a tensor of indices."""
    return index % world_size() == rank()


def summed(t: torch.Tensor) -> torch.Tensor:
    """`t` summed over all ranks (all-reduce through the CPU, where gloo runs); `t` itself alone."""
    if not dist.is_initialized():
        return t
    total = t.detach().cpu().clone()
    dist.all_reduce(total)
    return total.to(t.device)
