"""Atomic writes: a file is written under a temporary name next to its destination and renamed into
place, so a run killed at any moment (SIGKILL included) leaves either the old file or the new one,
never half of one; `--resume` can then trust every file it finds. In a sharded run (advlab.core.distributed)
only rank 0 writes, except for what a rank writes with `any_rank=True` (its own chunks). The reading
counterpart, `read_tensors`, turns a file torch cannot load into one line naming the file."""
from __future__ import annotations

import errno
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from advlab.core import distributed

LOW_SPACE = 64 * 2**20  # bytes: a write that fails with less than this free is a full disk


def write_text(path: Path, text: str, *, any_rank: bool = False) -> None:
    """`path.write_text(text)`, atomically (UTF-8)."""
    if not (any_rank or distributed.is_main()):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def save_tensors(obj: Any, path: Path, *, any_rank: bool = False) -> None:
    """`torch.save(obj, path)`, atomically. A failed write is an OSError (torch wraps a full disk in a
    RuntimeError from its C++ writer), and leaves no temporary file behind."""
    if not (any_rank or distributed.is_main()):
        return
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
    except RuntimeError as exc:
        tmp.unlink(missing_ok=True)
        if "write" not in str(exc):
            raise
        free = shutil.disk_usage(path.parent).free
        if free < LOW_SPACE:
            raise OSError(errno.ENOSPC, "no space left on device", str(path)) from None
        raise OSError(errno.EIO, f"could not write the file ({str(exc).splitlines()[0][:120]})", str(path)) from None
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def remove_leftovers(folder: Path) -> int:
    """Delete the temporary files a killed process left under `folder` (before a resume); their count."""
    stale = [p for p in folder.rglob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def read_tensors(path: Path, what: str, fix: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU; a missing, corrupt or unsafe file is one
    AdvlabError line naming `what` it was meant to be, the reason, and `fix`."""
    from advlab.core.errors import AdvlabError

    if not path.is_file():
        raise AdvlabError(f"{what} {path} does not exist; {fix}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, truncated archives, refused globals
        raise AdvlabError(f"{what} {path} cannot be read ({load_failure(path, exc)}); {fix}") from None


def load_failure(path: Path, exc: BaseException) -> str:
    """Why torch.load refused `path`, in a few words: the reason inside its multi-line weights_only
    text (e.g. a Python object it does not load), or, for anything that is not a complete PyTorch
    archive, "not a complete PyTorch file" with the first line of the error."""
    lines = [line.strip() for line in str(exc).splitlines()]
    reason = next((x for x in lines if x), type(exc).__name__)
    for i, line in enumerate(lines):
        if "Unpickler error:" in line:
            reason = line.split("Unpickler error:", 1)[1].strip() or next((x for x in lines[i + 1:] if x), "")
            reason = reason.split(". Please")[0].split(" was not an allowed global")[0]
            break
    else:
        reason = f"{type(exc).__name__}: {reason.split('. This is an internal')[0]}"
    if not zipfile.is_zipfile(path):
        return f"not a complete PyTorch file: {reason}"[:200]
    return reason[:200]
