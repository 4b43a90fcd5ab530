"""Sharded runs with torchrun (2 and 3 CPU processes, gloo): the merged results.json equals the
single-process run of the same config and seed, every rank computes its own chunks, and a sharded
run whose rank 1 is SIGKILLed mid-run resumes under another world size to the same results."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from advlab.cli.main import main
from advlab.zoo.segnet import WEIGHTS

# bit-for-bit comparisons with the ranks need this process at their thread count (see `one_thread`)
pytestmark = pytest.mark.usefixtures("in_tmp", "one_thread")
RUN_SPECIFIC = {"wall_s", "model_images_per_s", "created", "device", "world_size", "chunk_ranks"}  # how it ran


def write_config(path: Path, n: int, iterations: int) -> Path:
    path.write_text(f"""
name: shard
seed: 0
batch_size: 2
model: {{name: "advlab.zoo.segnet:fashion_segnet", weights: "{WEIGHTS}", mean: [0.5], std: [0.5], task: segmentation}}
data: {{source: "fashion-scenes:test", n: {n}}}
attacks:
  - {{method: dag, max_iterations: {iterations}}}
  - {{method: pgd, eps: 0.03, steps: 5}}
defenses:
  - {{method: jpeg, adaptive: true}}
""")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(k: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # each rank one thread, as this process (`one_thread`)
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(k),
                             "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "advlab", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def finished(proc: subprocess.Popen, timeout: float = 300) -> int:
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        print(err[-3000:])
    return proc.returncode


def comparable(results: dict[str, Any]) -> Any:
    def strip(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if k not in RUN_SPECIFIC}
        if isinstance(o, list):
            return [strip(v) for v in o]
        return o
    return strip(results)


def read(run: Path) -> dict[str, Any]:
    return json.loads((run / "results.json").read_text())


def test_a_sharded_run_equals_the_single_process_run(tmp_path: Path) -> None:
    config = write_config(tmp_path / "shard.yaml", n=6, iterations=20)
    assert main(["run", str(config), "--out", str(tmp_path / "single")]) == 0
    assert finished(torchrun(2, "run", str(config), "--out", str(tmp_path / "sharded"))) == 0
    single, sharded = read(tmp_path / "single"), read(tmp_path / "sharded")
    assert sharded["world_size"] == 2 and single["world_size"] == 1
    assert comparable(sharded) == comparable(single)  # every row, sample, defense and check
    dag = sharded["attacks"][0]
    assert dag["chunk_ranks"] == [0, 1, 0] and single["attacks"][0]["chunk_ranks"] == [0, 0, 0]  # 3 chunks of 2
    assert not list((tmp_path / "sharded" / "arrays").glob("*.chunks"))  # checkpoints go once the run is done
    assert (tmp_path / "sharded" / "index.html").is_file()


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank among `parent`'s children."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in env:
            return int(proc.name)
    return None


def test_a_sharded_run_killed_in_one_rank_resumes_under_another_world_size(tmp_path: Path) -> None:
    config = write_config(tmp_path / "shard.yaml", n=8, iterations=100)  # long enough to kill a rank mid-run
    run = tmp_path / "sharded"
    proc = torchrun(2, "run", str(config), "--out", str(run))
    chunks = run / "arrays" / "dag-0.chunks"
    deadline = time.monotonic() + 240
    while len(list(chunks.glob("chunk-*.pt"))) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    pid = _rank_pid(proc.pid, 1)
    assert pid is not None and proc.poll() is None, "the sharded run ended before rank 1 could be killed"
    os.kill(pid, signal.SIGKILL)  # rank 1 dies mid-run; torchrun stops rank 0
    assert finished(proc) != 0
    assert not (run / "results.json").exists() and len(list(chunks.glob("chunk-*.pt"))) < 4
    assert finished(torchrun(3, "run", "--resume", str(run))) == 0  # resumed with 3 ranks
    assert main(["run", str(config), "--out", str(tmp_path / "single")]) == 0
    assert comparable(read(run)) == comparable(read(tmp_path / "single"))


def test_a_sharded_universal_perturbation_shares_each_minibatch_and_matches_one_process(fashion, tmp_path: Path) -> None:
    """One v for the set: under torchrun the ranks split every minibatch and sum v's gradient (the DDP
    pattern), so the perturbation equals the single-process one up to float summation order."""
    config = tmp_path / "uap.yaml"
    config.write_text(f"""
name: uap
seed: 0
model: {{name: "advlab.zoo.smallnets:fashion_cnn", weights: "{fashion.weights}", mean: [0.5], std: [0.5], input_size: 28}}
data: {{source: "fashion-mnist:test", n: 96}}
attacks:
  - {{method: universal, solver: sgd, norm: linf, eps: 0.1, max_passes: 2, batch_size: 32}}
  - {{method: universal, solver: deepfool, norm: l2, eps: 3.0, max_passes: 1, batch_size: 32, candidate_classes: 3}}
""")
    assert main(["run", str(config), "--out", str(tmp_path / "single")]) == 0
    assert finished(torchrun(2, "run", str(config), "--out", str(tmp_path / "sharded"))) == 0
    single, sharded = read(tmp_path / "single"), read(tmp_path / "sharded")
    for one, two in zip(single["attacks"], sharded["attacks"]):
        v1 = torch.load(tmp_path / "single" / one["perturbation_file"], weights_only=True)["perturbation"]
        v2 = torch.load(tmp_path / "sharded" / two["perturbation_file"], weights_only=True)["perturbation"]
        assert torch.allclose(v1, v2, atol=1e-4), (one["params"]["solver"], float((v1 - v2).abs().max()))
        assert two["fooling_ratio"] == pytest.approx(one["fooling_ratio"], abs=0.02)
        assert two["queries_total"] == one["queries_total"]
