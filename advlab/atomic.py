"""Atomic writes: a file is written under a temporary name next to its destination and renamed into
place, so a run killed at any moment (SIGKILL included) leaves either the old file or the new one,
never half of one; `--resume` can then trust every file it finds. In a sharded run (advlab.distributed)
only rank 0 writes, except for what a rank writes with `any_rank=True` (its own chunks)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from advlab import distributed


def write_text(path: Path, text: str, *, any_rank: bool = False) -> None:
    """`path.write_text(text)`, atomically (UTF-8)."""
    if not (any_rank or distributed.is_main()):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def save_tensors(obj: Any, path: Path, *, any_rank: bool = False) -> None:
    """`torch.save(obj, path)`, atomically."""
    if not (any_rank or distributed.is_main()):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def remove_leftovers(folder: Path) -> int:
    """Delete the temporary files a killed process left under `folder` (before a resume); their count."""
    stale = [p for p in folder.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)
