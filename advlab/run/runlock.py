"""One process at a time in a run directory: `claim(run_dir)` takes an exclusive lock (`filelock`,
released by the OS if the process dies, SIGKILL included) and records the holder's pid, so that a
second `advlab` started on the same directory is told which process is writing it instead of being
sent to `--resume` a run that is still running."""
from __future__ import annotations

import os
from pathlib import Path

from filelock import FileLock, Timeout

from advlab.core.errors import AdvlabError

LOCK_FILES = (".advlab.lock", ".advlab.pid")  # inside the run directory; not part of a run's results


class RunLock:
    """The lock of one run directory, held from `claim` until `release`."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self._lock = FileLock(str(run_dir / LOCK_FILES[0]))
        self._pid = run_dir / LOCK_FILES[1]

    def claim(self) -> RunLock:
        """Take the lock now, or say which process holds it (one line, exit 2 at the CLI)."""
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            holder = self._pid.read_text().strip() if self._pid.is_file() else "another process"
            raise AdvlabError(f"{self.run_dir} is being written by process {holder}; wait for it to finish "
                              "(or stop it, then continue with `advlab run --resume`)") from None
        self._pid.write_text(f"{os.getpid()}\n")
        return self

    def release(self) -> None:
        """Let go; the lock file stays (removing it would race with a process opening it)."""
        if self._lock.is_locked:
            self._pid.unlink(missing_ok=True)
            self._lock.release()


def own_files(path: Path) -> bool:
    """True for advlab's lock files, which do not make a directory a run or the user's."""
    return path.name in LOCK_FILES
