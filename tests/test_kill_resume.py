"""A run killed with SIGKILL in the middle of a chunk resumes to exactly the uninterrupted run's
per-image results: every file is written atomically (temp file + rename), and finished chunks are kept."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from advlab.cli.main import main


def _per_image(run) -> list[dict]:
    rows = json.loads((run / "results.json").read_text())["attacks"]
    return [{k: s[k] for k in ("name", "adv_pred", "success", "l2", "queries")} for r in rows for s in r["samples"]]


def test_a_run_killed_mid_chunk_resumes_to_the_uninterrupted_result(fashion, in_tmp):
    args = ["attack", "--method", "boundary", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
            str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data", "fashion-mnist",
            "-n", "12", "--batch-size", "2", "--max-queries", "800"]
    proc = subprocess.Popen([sys.executable, "-m", "advlab.cli.main", *args, "--out", "killed"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    chunks = in_tmp / "killed" / "arrays" / "boundary-0.chunks"
    deadline = time.monotonic() + 300
    while not (chunks / "chunk-00001.pt").exists():  # two chunks done: kill it inside the third
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (in_tmp / "killed" / "results.json").exists()  # it really died mid-run
    kept = sorted(p.name for p in chunks.glob("chunk-*.pt"))
    assert 2 <= len(kept) < 6
    assert main(["run", "--resume", str(in_tmp / "killed")]) == 0
    assert main([*args, "--out", "full"]) == 0
    assert _per_image(in_tmp / "killed") == _per_image(in_tmp / "full")
    assert not list((in_tmp / "killed").rglob("*.tmp"))  # no half-written file left behind after the resume
