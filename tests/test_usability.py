"""The smaller things a user notices: foolbox's candidate count, factories and --num-classes,
honest plugin descriptions, the usual median, class names from the data, --version and
`advlab list METHOD`, --help defaults."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from advlab.attacks.boundary import BoundaryAttack
from advlab.cli.main import main
from advlab.core.stats import median

pytestmark = pytest.mark.usefixtures("in_tmp")


def test_foolbox_backend_takes_one_candidate_by_itself_and_records_it():
    assert BoundaryAttack(backend="foolbox").candidates == 1
    assert BoundaryAttack(backend="foolbox").params()["candidates"] == 1
    assert BoundaryAttack().candidates == 2  # ours: several proposals per forward pass
    foolbox = BoundaryAttack(backend="foolbox")  # foolbox's own defaults, not ours
    assert foolbox.spherical_step == foolbox.source_step == 0.01
    assert BoundaryAttack().spherical_step == 0.05 and BoundaryAttack().source_step is None  # ours: from the rule
    assert BoundaryAttack().max_queries == 2000 and BoundaryAttack(backend="foolbox").max_queries is None
    with pytest.raises(ValueError, match="candidates must be 1 with backend foolbox"):
        BoundaryAttack(backend="foolbox", candidates=4)


def test_foolbox_backend_from_the_command_line_records_candidates(fashion, tmp_path):
    out = tmp_path / "fb"
    assert main(["attack", "--method", "boundary", "--backend", "foolbox", "--steps", "20", "-n", "3", "--model",
                 "advlab.zoo.smallnets:fashion_cnn", "--weights", str(fashion.weights), "--mean", "0.5", "--std", "0.5",
                 "--input-size", "28", "--data", "fashion-mnist:test", "--out", str(out)]) == 0
    row = json.loads((out / "results.json").read_text())["attacks"][0]
    assert row["params"]["candidates"] == 1 and row["params"]["backend"] == "foolbox"


def test_num_classes_goes_to_a_factory_only_if_it_takes_it(fashion, tmp_path):
    models = tmp_path / "nets.py"
    models.write_text("from advlab.zoo.smallnets import fashion_cnn\n"
                      "def fixed():\n    return fashion_cnn()\n"
                      "def sized(num_classes=3):\n    import torch\n"
                      "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, num_classes))\n")
    common = ["--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data", "fashion-mnist:test", "-n", "3",
              "--eps", "0.1"]
    out = tmp_path / "fixed"
    assert main(["attack", "--method", "fgsm", "--model", f"{models}:fixed", "--weights", str(fashion.weights),
                 "--num-classes", "10", *common, "--out", str(out)]) == 0  # before: factory(num_classes=10) failed
    assert json.loads((out / "results.json").read_text())["model"]["num_classes"] == 10
    out = tmp_path / "sized"
    assert main(["attack", "--method", "fgsm", "--model", f"{models}:sized", "--weights", "none", "--num-classes",
                 "10", *common, "--out", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["model"]["num_classes"] == 10


def test_plugin_descriptions_match_their_defaults(capsys):
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert "without random start" not in listing and "steps from a random start" in listing
    assert main(["list", "pgd"]) == 0
    pgd = capsys.readouterr().out
    assert "random_start" in pgd and "bool" in pgd and "default True" in pgd
    assert main(["list", "jpeg"]) == 0
    assert "quality" in capsys.readouterr().out
    assert main(["list", "boundary"]) == 0  # a None default says what it picks
    boundary = capsys.readouterr().out
    assert "default None (= 2000)" in boundary and "default None (= 'lowfreq')" in boundary
    with pytest.raises(SystemExit) as version:
        main(["--version"])
    assert version.value.code == 0 and capsys.readouterr().out.startswith("advlab 0.")


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["defend", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 10)" in text and "(default: lgd)" not in text  # --epochs; --variant says it itself
    assert "default fp32" in text and "never changes a result" in text


def test_the_median_is_the_usual_one():
    assert median(torch.tensor([1.0, 2.0, 3.0, 4.0])) == 2.5  # torch.median would give the lower 2.0
    assert median(torch.tensor([3.0, float("inf"), 1.0])) == 2.0 and median(torch.tensor([])) is None


def test_fashion_mnist_names_its_classes(fashion, tmp_path):
    """Before: '9 #9' instead of 'Ankle boot' unless --class-names was given."""
    out = tmp_path / "named"
    assert main(["attack", "--method", "fgsm", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
                 str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data",
                 "fashion-mnist:test", "-n", "2", "--out", str(out)]) == 0
    sample = json.loads((out / "results.json").read_text())["attacks"][0]["samples"][0]
    assert sample["label"] == 9 and sample["label_name"] == "Ankle boot"
    assert "Ankle boot" in (out / "index.html").read_text()


def test_cpu_runs_keep_freed_memory_for_reuse_on_glibc(digits, tmp_path):
    """README, CPU speed: a run of the command line sets glibc's allocator to reuse memory (`manage_heap`)."""
    import platform
    import sys

    script = f"""
import sys, numpy as np
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
import advlab.core.device as device
from advlab.cli.main import main
np.savez({str(tmp_path / "d.npz")!r}, x=np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32),
         y=np.zeros(2, dtype=np.int64))
before = device._Heap.managed
code = main(["attack", "--method", "fgsm", "--eps", "0.1", "--model", "conftest.py:digits_net", "--weights",
             {str(digits.weights)!r}, "--input-size", "8", "--data", "tensors:{tmp_path / "d.npz"}",
             "--out", {str(tmp_path / "run")!r}, "--quiet"])
print(code, before, device._Heap.managed, device.keep_freed_memory())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent, env={**os.environ, "OMP_NUM_THREADS": "1"})
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out.stdout.split()[-4:] == ["0", "False", "True", str(glibc)]


