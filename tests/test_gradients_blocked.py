"""A model whose forward blocks gradients (issue 34: it crashed the run after the attacks finished): the
probe says so once per column, gradient attacks end as rows that say why they did not run, and the
decision-based attack runs as on any model; the run finishes (exit 0) and reads back."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from advlab.cli.main import main

FACTORY = Path(__file__).resolve().parent / "nograd_model.py"


def test_a_model_without_gradients_is_evaluated_not_crashed_on(digits, tmp_path, capsys, one_thread):
    state = torch.load(digits.weights, weights_only=True)
    torch.save({f"net.{k}": v for k, v in state.items()}, tmp_path / "nograd.pt")
    x, y = digits.correct(6)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    code = main(["defend", "--defense", "jpeg", "--attacks", "pgd,boundary", "--max-queries", "300", "--model",
                 f"{FACTORY}:factory", "--weights", str(tmp_path / "nograd.pt"), "--input-size", "8", "--data",
                 f"tensors:{tmp_path / 'd.npz'}", "--out", str(tmp_path / "run")])
    shown = capsys.readouterr().out
    assert code == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["clean"]["accuracy"] == 1.0  # the real digits CNN: all six right
    rows = {(r["method"], r["setting"]): r for r in results["attacks"]}
    pgd = rows[("pgd", "plain model")]
    assert pgd["skipped"].startswith("not run: the model's output has no gradient") and "samples" not in pgd
    boundary = rows[("boundary", "plain model")]
    assert "skipped" not in boundary and boundary["success_rate"] > 0.5  # a decision-based attack runs as usual
    assert ("boundary", "defended model (adaptive)") in rows and ("pgd", "defended model (adaptive)") not in rows
    checks = [(w["check"], w["where"]) for w in results["warnings"]]
    assert ("gradients-blocked", "no defense") in checks and ("gradients-blocked", "jpeg q75, adaptive") in checks
    matrix = results["robustness"]["matrices"][0]
    assert [r["attack"] for r in matrix["rows"]] == ["boundary", "worst case"]  # pgd counts nowhere
    assert "pgd (plain model): not run" in shown and "warning [gradients-blocked]" in shown
    html = (tmp_path / "run" / "index.html").read_text()
    assert "not run: the model&#39;s output has no gradient" in html
