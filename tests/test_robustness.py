"""Worst case over attacks, eps sweeps and robustness curves, and the sanity checks on a real run: the
Fashion-MNIST CNN against FGSM, a PGD eps sweep and the Boundary Attack, behind bit-depth reduction
attacked with BPDA and without it (its gradient is zero: the masked evaluation the checks must flag)."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from advlab.cli import main
from advlab.config import AttackSpec, expand_sweeps
from advlab.robustness import attack_labels


@pytest.fixture(scope="module")
def matrix_run(fashion, tmp_path_factory):
    root = tmp_path_factory.mktemp("matrix")
    config = {
        "name": "matrix", "seed": 0, "batch_size": 100,
        "model": {"name": "advlab.smallnets:fashion_cnn", "weights": str(fashion.weights), "mean": [0.5],
                  "std": [0.5], "input_size": 28},
        "data": {"source": "fashion-mnist:test", "n": 80},
        "attacks": [{"method": "fgsm", "eps": 0.1}, {"method": "pgd", "eps": [0.03, 0.1, 0.3], "steps": 5},
                    {"method": "boundary", "max_queries": 150}],
        "defenses": [{"method": "bit-depth", "bits": 2}, {"method": "bit-depth", "bits": 2, "bpda": False}],
    }
    path = root / "matrix.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--out", str(root / "run")]) == 0
    return root / "run", json.loads((root / "run" / "results.json").read_text())


def test_the_worst_case_is_at_or_below_every_attack_in_every_column(matrix_run):
    _, results = matrix_run
    rob = results["robustness"]
    labels = [c["label"] for c in rob["columns"]]
    assert labels[:3] == ["no defense", "bit-depth 2 bits, non-adaptive", "bit-depth 2 bits, adaptive"]
    assert "bit-depth 2 bits, worst setting" in labels and "bit-depth 2 bits, no BPDA, adaptive" in labels
    rows = {r["attack"]: r["accuracy"] for r in rob["rows"]}
    assert list(rows) == ["fgsm", "pgd eps=0.03", "pgd eps=0.1", "pgd eps=0.3", "boundary", "worst case"]
    for j in range(len(labels)):
        singles = [rows[a][j] for a in rows if a != "worst case" and rows[a][j] is not None]
        assert rows["worst case"][j] <= min(singles)
    # the no-defense worst case, recomputed per image from the rows' samples
    plain = [a for a in results["attacks"] if a["setting"] == "plain model"]
    right = torch.ones(80, dtype=torch.bool)
    for row in plain:
        right &= torch.tensor([s["adv_pred"] == s["label"] for s in row["samples"]])
    assert rows["worst case"][0] == pytest.approx(float(right.float().mean()))
    assert rows["worst case"][0] < rows["fgsm"][0]  # the worst case is a real minimum, not a copy of one row


def test_an_eps_list_gives_one_row_each_and_a_monotone_curve_for_sound_columns(matrix_run):
    _, results = matrix_run
    pgd_rows = [a for a in results["attacks"] if a["method"] == "pgd" and a["setting"] == "plain model"]
    assert [a["params"]["eps"] for a in pgd_rows] == [0.03, 0.1, 0.3]
    curves = {c["column"]: c for c in results["robustness"]["curves"] if c["kind"] == "eps"}
    for column in ("no defense", "bit-depth 2 bits, adaptive"):
        accuracy = [a for _, a in curves[column]["points"]]
        assert accuracy == sorted(accuracy, reverse=True) and accuracy[-1] < 0.1, (column, accuracy)
    minimal = [c for c in results["robustness"]["curves"] if c["kind"] == "minimal"]
    assert {c["column"] for c in minimal} >= {"no defense", "bit-depth 2 bits, adaptive"}
    for c in minimal:  # robust accuracy against the threshold never rises, and ends at the attack's own row
        accuracy = [a for _, a in c["points"]]
        assert accuracy == sorted(accuracy, reverse=True)


def test_bit_depth_without_bpda_is_flagged_and_the_bpda_evaluation_is_not(matrix_run):
    run, results = matrix_run
    flagged = {(w["check"], w["where"]) for w in results["warnings"]}
    masked = "bit-depth 2 bits, no BPDA, adaptive"
    assert ("masked-gradients", masked) in flagged and ("gradient-masking", masked) in flagged
    assert ("unbounded-attack", masked) in flagged
    assert all(where.startswith(masked) for _, where in flagged), flagged  # nothing on the sound columns
    html = (run / "index.html").read_text()
    assert 'class="warnbox"' in html and "Robust accuracy" in html and "worst case" in html
    assert html.count("<img") >= 2 and "accuracy against eps" in html


def test_sweeps_expand_in_order_and_labels_tell_the_rows_apart():
    specs = expand_sweeps([AttackSpec("pgd", params={"eps": ["2/255", 0.1], "steps": 5}),
                           AttackSpec("fgsm", params={"eps": 0.1})])
    assert [(s.method, s.params["eps"]) for s in specs] == [("pgd", 2 / 255), ("pgd", 0.1), ("fgsm", 0.1)]
    assert attack_labels(specs) == ["pgd eps=0.007843", "pgd eps=0.1", "fgsm"]
    twins = [AttackSpec("pgd", params={"eps": 0.1}), AttackSpec("pgd", params={"eps": 0.1})]
    assert attack_labels(twins) == ["pgd-0", "pgd-1"]


def test_a_sweep_from_the_command_line(fashion, in_tmp):
    assert main(["attack", "--method", "fgsm", "--model", "advlab.smallnets:fashion_cnn", "--weights",
                 str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data",
                 "fashion-mnist", "-n", "20", "--set", "eps=[0.05, 0.2]", "--out", "run"]) == 0
    results = json.loads((in_tmp / "run" / "results.json").read_text())
    assert [a["params"]["eps"] for a in results["attacks"]] == [0.05, 0.2]
    assert results["robustness"]["curves"][0]["points"][0][0] == 0.05
