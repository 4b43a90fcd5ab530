"""Faults a run survives (issue 22, sections 3-5): a finished run resumes to "already finished";
SIGTERM stops a run like Ctrl-C; completion is one last atomic step; one process at a time writes a
run directory; a full disk is one line and the run resumes; a corrupt file is one line; HGD training
says when its denoiser is useless and prints a command that runs as printed."""
from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from advlab.cli.main import main
from advlab.core import atomic
from advlab.run.runlock import RunLock


def fgsm_args(fashion, n: int = 8) -> list[str]:
    return ["attack", "--method", "fgsm", "--eps", "0.1", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
            str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data", "fashion-mnist",
            "-n", str(n), "--batch-size", "4"]


def test_resuming_a_finished_run_changes_nothing(fashion, in_tmp, capsys):
    run = in_tmp / "done"
    assert main([*fgsm_args(fashion), "--out", str(run)]) == 0
    results, report = (run / "results.json").read_bytes(), (run / "index.html").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["run", "--resume", str(run)]) == 0
    assert "is already finished; nothing to resume" in capsys.readouterr().err
    assert (run / "results.json").read_bytes() == results and (run / "index.html").stat().st_mtime_ns == report
    (run / "index.html").unlink()  # a lost report is rendered again, from the same results
    assert main(["run", "--resume", str(run)]) == 0
    assert "rendered again" in capsys.readouterr().err
    assert (run / "index.html").is_file() and (run / "results.json").read_bytes() == results


def test_sigterm_stops_a_run_as_ctrl_c_does_and_the_run_resumes(fashion, in_tmp):
    args = ["attack", "--method", "boundary", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
            str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data", "fashion-mnist",
            "-n", "6", "--batch-size", "2", "--max-queries", "600", "--out", "stopped"]
    proc = subprocess.Popen([sys.executable, "-m", "advlab.cli.main", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    chunks = in_tmp / "stopped" / "arrays" / "boundary-0.chunks"
    deadline = time.monotonic() + 300
    while not (chunks / "chunk-00000.pt").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be stopped"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert f"Continue with: advlab run --resume {in_tmp / 'stopped'}" in err and "Traceback" not in err
    assert not (in_tmp / "stopped" / "results.json").exists()  # an unfinished run does not look finished
    assert main(["run", "--resume", str(in_tmp / "stopped")]) == 0
    assert (in_tmp / "stopped" / "results.json").is_file() and not chunks.exists()


def test_completion_is_the_last_step(fashion, in_tmp, monkeypatch):
    """Stopped while its report is written, a run has no results.json: it is not finished, to the user
    or to `advlab runs`, and the resume finishes it."""
    import advlab.run.runner

    real = advlab.run.runner.render_html

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(advlab.run.runner, "render_html", stopped)
    run = in_tmp / "late"
    assert main([*fgsm_args(fashion), "--out", str(run)]) == 130
    assert not (run / "results.json").exists() and list((run / "arrays").glob("*.chunks"))
    monkeypatch.setattr(advlab.run.runner, "render_html", real)
    from advlab.cli.runs import find_runs

    assert run not in find_runs(in_tmp)  # `advlab runs` lists finished runs only
    assert main(["run", "--resume", str(run)]) == 0
    assert (run / "results.json").is_file() and (run / "index.html").is_file()
    assert not list((run / "arrays").glob("*.chunks"))


def test_one_process_at_a_time_writes_a_run_directory(fashion, in_tmp, run_error):
    busy = in_tmp / "busy"
    busy.mkdir()
    lock = RunLock(busy).claim()  # as a first `advlab attack --out busy` still running would hold it
    try:
        message = run_error(*fgsm_args(fashion), "--out", str(busy))
        assert f"is being written by process {os.getpid()}" in message and "--resume" in message
        (busy / "config.yaml").write_text("name: x\n")
        assert f"being written by process {os.getpid()}" in run_error("run", "--resume", str(busy))
    finally:
        lock.release()
    free = in_tmp / "free"
    assert main([*fgsm_args(fashion), "--out", str(free)]) == 0  # the lock files never make a folder "not empty"
    assert not (free / ".advlab.pid").exists()


def test_a_full_disk_is_one_line_and_the_run_resumes(fashion, in_tmp, monkeypatch, capsys):
    """torch.save wraps a failed write in a RuntimeError from its C++ writer; the lab says what it is."""
    real, calls = torch.save, []

    def full_disk(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) > 1:  # the first chunk is written, then the disk is full
            Path(path).write_bytes(b"partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        return real(obj, path, *args, **kwargs)

    monkeypatch.setattr(atomic.torch, "save", full_disk)
    usage = shutil.disk_usage
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: usage(path)._replace(free=0))
    run = in_tmp / "full"
    assert main([*fgsm_args(fashion), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no space left on device" in err and f"advlab run --resume {run}" in err
    assert "internal error" not in err and not list(run.rglob("*.tmp"))  # no half-written file kept
    monkeypatch.setattr(atomic.torch, "save", real)
    assert main(["run", "--resume", str(run)]) == 0 and (run / "results.json").is_file()


def test_a_corrupt_perturbation_or_checkpoint_file_is_one_line(fashion, in_tmp, run_error):
    garbage = in_tmp / "garbage.pt"
    garbage.write_bytes(b"these bytes are not a PyTorch file")
    common = ["--model", "advlab.zoo.smallnets:fashion_cnn", "--weights", str(fashion.weights), "--mean", "0.5",
              "--std", "0.5", "--input-size", "28", "--data", "fashion-mnist", "-n", "4"]
    for message in (run_error("attack", "--method", "universal", "--perturbation", str(garbage), *common),
                    run_error("defend", "--hgd", "--checkpoint", str(garbage), *common)):
        assert f"{garbage} cannot be read (not a complete PyTorch file" in message
        assert "\n" not in message.strip() and "Weights only load failed" not in message


def test_hgd_training_warns_when_the_denoiser_is_useless_and_prints_a_command_that_runs(fashion, in_tmp, capsys):
    """A denoiser that costs more than 5 points of clean accuracy on its held-out images is flagged
    (a learning rate that wrecks it: 0.850 -> 0.100 measured; the default keeps 0.850), and the
    evaluation command printed after training runs as printed."""
    common = ["defend", "--hgd", "--train", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
              str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data",
              "fashion-mnist:train", "-n", "40", "--val-n", "20", "--width", "0.25", "--epochs", "1"]
    assert main([*common, "--out", str(in_tmp / "kept")]) == 0
    out, err = capsys.readouterr()
    assert "points of clean accuracy" not in err
    command = next(line for line in out.splitlines() if line.startswith("evaluate it: "))[len("evaluate it: "):]
    argv = shlex.split(command)
    assert argv[:2] == ["advlab", "defend"] and "..." not in command
    assert argv[argv.index("--data") + 1] == "fashion-mnist:test"  # trained on the train split: test on the test split
    argv[argv.index("-n") + 1] = "8"  # the same command on fewer images, to keep the test short
    assert main([*argv[1:], "--out", str(in_tmp / "evaluated")]) == 0
    results = json.loads((in_tmp / "evaluated" / "results.json").read_text())
    assert [d["method"] for d in results["defenses"]] == ["hgd"]
    capsys.readouterr()
    assert main([*common, "--lr", "0.5", "--out", str(in_tmp / "wrecked")]) == 0
    assert "points of clean accuracy on its 20 held-out images" in capsys.readouterr().err
