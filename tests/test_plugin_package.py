"""The proof that the lab's shape holds (issue 21, item 6): a plugin package advlab has never heard
of (`tests/plugins/advlab_toy`) adds a task, a model source, a data source and an attack through its
own entry points only, and `advlab run` -> results.json -> index.html -> `advlab export` works on it
end to end. The package is put on the subprocesses' PYTHONPATH, where importlib.metadata finds its
dist-info; this process never imports it."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

PLUGINS = Path(__file__).parent / "plugins"
ADVLAB = [sys.executable, "-m", "advlab.cli.main"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PLUGINS), os.environ.get("PYTHONPATH")]))}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*ADVLAB, *args], env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy's attribute net trained on real Fashion-MNIST, attacked by the toy's attack in `advlab run`."""
    root = tmp_path_factory.mktemp("toy")
    weights = root / "attribute_net.pt"
    subprocess.run([sys.executable, "-m", "advlab_toy.model", str(weights)], env=_env(), check=True, timeout=300)
    config = root / "toy.yaml"
    config.write_text(f"name: toy\ndevice: cpu\nseed: 0\n"
                      f"model: {{name: fashion_attribute_net, weights: {weights}}}\n"
                      "data: {source: 'fashion-attributes:test', n: 64}\n"
                      "attacks:\n  - {method: flip-step, eps: 0.1, steps: 5}\n")
    _run("run", str(config), "--out", str(root / "run"))
    return root / "run"


def test_advlab_does_not_know_the_toy_package_by_itself() -> None:
    from advlab.core.registry import ATTACKS
    from advlab.tasks import TASKS

    assert "attributes" not in TASKS and "flip-step" not in ATTACKS
    assert "advlab_toy" not in sys.modules


def test_advlab_list_shows_every_entry_the_toy_package_brings() -> None:
    listing = _run("list").stdout
    for line in (r"^\s*flip-step\s", r"^\s*attributes\s+score=label_accuracy", r"^\s*attribute-net\s+task=attributes",
                 r"^\s*fashion-attributes\[:train\|test\]\s"):
        assert re.search(line, listing, re.M), line


def test_the_toy_task_and_attack_run_end_to_end(toy_run: Path) -> None:
    results = json.loads((toy_run / "results.json").read_text())
    row = results["attacks"][0]
    assert row["task"] == "attributes" and row["method"] == "flip-step"
    clean = results["clean"]["label_accuracy"]
    assert clean > 0.9  # a real model: it predicts Fashion-MNIST's attributes
    assert row["success_rate"] > 0.4 and row["label_accuracy"] < clean - 0.1  # the attack flips labels
    assert "accuracy" not in row and "median_l2" not in row  # only the toy task's own keys
    assert len(row["samples"]) == 64 and set(row["samples"][0]) >= {"attributes", "clean", "adv", "success"}
    # the robustness matrix comes from the toy task's per-image verdict, within the attack's own bound
    matrix = results["robustness"]["matrices"][0]
    assert matrix["threat"]["norm"] == "linf" and matrix["threat"]["eps"] == pytest.approx(0.1)
    robust = {r["attack"]: r["accuracy"][0] for r in matrix["rows"]}
    assert robust["flip-step"] < results["robustness"]["columns"][0]["clean_accuracy"] - 0.2

    html = (toy_run / "index.html").read_text()
    assert "label acc. clean → adv." in html and "labels flipped" in html  # the toy view's columns and glossary
    assert "top-1" not in html and "4 attributes" in html  # no classification words
    first = row["samples"][0]
    assert ", ".join(first["adv"]) in html

    table = _run("export", str(toy_run), "--format", "markdown").stdout
    cells = {line.split("|")[1].strip(): float(line.split("|")[2]) for line in table.splitlines()
             if line.startswith("| ") and re.search(r"\|\s*[\d.]+\s*\|$", line)}
    assert cells["flip-step"] == pytest.approx(100 * robust["flip-step"], abs=0.05)
    assert cells["flip-step"] < cells["clean"]
