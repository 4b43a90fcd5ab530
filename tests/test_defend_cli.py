"""`advlab defend` end to end on the digits CNN: train an HGD, evaluate it with baselines in the
three settings, and the one-line errors of the verb."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from advlab.cli.main import main
from advlab.core.config_yaml import load_config
from advlab.defenses.dunet import DUNET
from advlab.defenses.hgd import save_checkpoint

CONFTEST = Path(__file__).resolve().parent / "conftest.py"


pytestmark = pytest.mark.usefixtures("in_tmp")  # runs without --out land in the test's directory


def save_images(path: Path, x: torch.Tensor, y: torch.Tensor) -> Path:
    np.savez(path, x=(x.numpy() * 255).round().astype(np.uint8), y=y.numpy())
    return path


def model_args(digits) -> list[str]:
    return ["--model", f"{CONFTEST}:digits_net", "--weights", str(digits.weights), "--mean", "0.5", "--std", "0.5",
            "--input-size", "8"]


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """An HGD trained through the CLI on 300 digits (pairs from FGSM/PGD up to eps 0.3)."""
    root = tmp_path_factory.mktemp("defend")
    train = save_images(root / "train.npz", digits.x_test[:300], digits.y_test[:300])
    out = root / "hgd"
    args = ["defend", "--hgd", "--train", *model_args(digits), "--data", f"tensors:{train}", "--width", "0.25",
            "--epochs", "2", "--eps-max", "0.3", "--val-n", "50", "--out", str(out)]
    assert main(args) == 0
    return root, out, args


def test_training_writes_a_resumable_checkpoint(trained):
    _, out, args = trained
    assert {"hgd-lgd.pt", "train.json", "log.txt", "hgd-pairs.pt", "hgd-train-state.pt"} <= {p.name for p in out.iterdir()}
    info = json.loads((out / "train.json").read_text())
    assert info["variant"] == "lgd" and info["n_train"] == 250 and info["n_val"] == 50
    assert len(info["history"]) == 2 and info["history"][1]["loss"] < info["history"][0]["loss"]
    payload = torch.load(out / "hgd-lgd.pt", weights_only=True)
    assert payload["config"]["in_channels"] == 1 and payload["config"]["width"] == 0.25
    pairs_mtime = (out / "hgd-pairs.pt").stat().st_mtime
    assert main(args) == 0  # the same command again: pairs and epochs are reused, nothing is recomputed
    assert (out / "hgd-pairs.pt").stat().st_mtime == pairs_mtime
    assert len(json.loads((out / "train.json").read_text())["history"]) == 2


def test_evaluation_reports_three_settings_per_attack(trained, digits):
    root, out, _ = trained
    x, y = digits.x_test[300:], digits.y_test[300:]
    data = save_images(root / "eval.npz", x, y)
    run = root / "eval"
    assert main(["defend", "--hgd", "--checkpoint", str(out / "hgd-lgd.pt"), "--defense", "jpeg,bit-depth:bits=2",
                 "--attacks", "fgsm,pgd,universal", "--eps", "0.3", "--max-passes", "2", *model_args(digits),
                 "--data", f"tensors:{data}", "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    bare = {a["method"]: a for a in results["attacks"] if a["defense"] is None and not a.get("baseline")}
    adaptive = [a for a in results["attacks"] if a["defense"] is not None]
    assert set(bare) == {"fgsm", "pgd", "universal"} and len(adaptive) == 9
    universal = [a for a in adaptive if a["method"] == "universal"]  # a UAP computed on each defended model
    assert len(universal) == 3 and all(a["perturbation_file"] for a in universal)
    assert {(a["defense"], a["adaptive"]) for a in adaptive} == {("hgd", "exact"), ("jpeg", "bpda"),
                                                                 ("bit-depth", "bpda")}
    assert all(a["setting"] == "defended model (adaptive)" for a in adaptive)
    assert [d["method"] for d in results["defenses"]] == ["hgd", "jpeg", "bit-depth"]
    for d in results["defenses"]:
        assert set(d["accuracy_after_defense"]) == {"fgsm", "fgsm(adaptive)", "pgd", "pgd(adaptive)", "universal",
                                                    "universal(adaptive)"}
        assert d["accuracy_without_defense"] == {m: bare[m]["accuracy"] for m in ("fgsm", "pgd", "universal")}
        assert d["clean_accuracy_undefended"] == results["clean"]["accuracy"]
        for m in ("fgsm", "pgd"):  # the adaptive row is the same number as the defense table's entry
            row = next(a for a in adaptive if a["defense"] == d["method"] and a["method"] == m)
            assert row["accuracy"] == d["accuracy_after_defense"][f"{m}(adaptive)"]
        gallery = torch.load(run / d["gallery"]["file"], weights_only=True)
        assert gallery["x"].shape == gallery["x_adv"].shape == gallery["denoised"].shape
        assert gallery["x"].shape[0] == len(d["gallery"]["rows"]) > 0
    assert results["defenses"][0]["variant"] == "lgd" and results["defenses"][1]["variant"] == "q75"
    bits = next(d for d in results["defenses"] if d["method"] == "bit-depth")
    assert bits["differentiable"] is False and bits["adaptive_gradient"] == "bpda"
    html = (run / "index.html").read_text()
    assert "Defenses" in html and "BPDA" in html and html.count("def-denoised") >= 3
    cfg = load_config(run / "config.yaml")  # the resolved config holds the defenses with every default
    assert [(d.method, d.params) for d in cfg.defenses] == [
        ("hgd", {"checkpoint": str(out / "hgd-lgd.pt")}), ("jpeg", {"quality": 75, "bpda": True}),
        ("bit-depth", {"bits": 2, "bpda": True})]



def test_defend_errors_are_one_line(run_error, digits, tmp_path):
    data = save_images(tmp_path / "d.npz", digits.x_test[:20], digits.y_test[:20])
    common = [*model_args(digits), "--data", f"tensors:{data}"]
    assert "--hgd needs --checkpoint" in run_error("defend", "--hgd", *common)
    assert "add --hgd" in run_error("defend", "--checkpoint", "x.pt", *common)
    assert "no defense given" in run_error("defend", *common)
    assert "unknown defense 'jpg'" in run_error("defend", "--defense", "jpg", *common)
    assert "no setting 'qualty'" in run_error("defend", "--defense", "jpeg:qualty=5", *common)
    assert "quality" in run_error("defend", "--defense", "jpeg:quality=0", *common)
    assert "unknown attack method 'pgdd'" in run_error("defend", "--defense", "jpeg", "--attacks", "pgdd",
                                                       *common)
    assert "no attack in --attacks fgsm has the setting 'steps'" in run_error(
        "defend", "--defense", "jpeg", "--attacks", "fgsm", "--steps", "3", *common)
    assert "add --hgd" in run_error("defend", "--train", *common)
    assert "variant must be one of" in run_error("defend", "--hgd", "--train", "--variant", "xgd", *common)
    assert "--val-n 20 must be" in run_error("defend", "--hgd", "--train", "--val-n", "20", *common,
                                             "--out", str(tmp_path / "t"))
    assert "does not exist" in run_error("defend", "--hgd", "--checkpoint", str(tmp_path / "nope.pt"),
                                         *common)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert "cannot be read" in run_error("defend", "--hgd", "--checkpoint", str(corrupt), *common)
    foreign = tmp_path / "state.pt"
    torch.save({"weight": torch.zeros(3)}, foreign)
    assert "not an advlab HGD checkpoint" in run_error("defend", "--hgd", "--checkpoint", str(foreign),
                                                       *common)
    rgb = save_checkpoint(tmp_path / "rgb.pt", DUNET(3, 0.125), {"variant": "lgd"})
    err = run_error("defend", "--hgd", "--checkpoint", str(rgb), *common, "--out", str(tmp_path / "r"))
    assert "denoises 3-channel images but got 1" in err
    assert not (tmp_path / "r").exists()  # found before the run directory was made
    yaml_cfg = tmp_path / "d.yaml"
    yaml_cfg.write_text("defenses: [{method: hgd}]\n")
    assert "needs the setting 'checkpoint'" in run_error("run", str(yaml_cfg))
    yaml_cfg.write_text("defenses: [{method: jpeg, adaptive: maybe}]\n")
    assert "adaptive must be true or false" in run_error("run", str(yaml_cfg))


def test_an_attack_used_twice_has_one_name_in_the_defense_table_and_the_matrix(digits, tmp_path):
    data = save_images(tmp_path / "eval.npz", digits.x_test[:40], digits.y_test[:40])
    run = tmp_path / "run"
    assert main(["defend", "--defense", "bit-depth:bits=2", "--attacks", "fgsm", "--eps", "0.1,0.3",
                 *model_args(digits), "--data", f"tensors:{data}", "--device", "cpu", "--out", str(run)]) == 0
    results = json.loads((run / "results.json").read_text())
    after = results["defenses"][0]["accuracy_after_defense"]
    assert set(after) == {"fgsm eps=0.1", "fgsm eps=0.1(adaptive)", "fgsm eps=0.3", "fgsm eps=0.3(adaptive)"}
    matrix = {r["attack"] for m in results["robustness"]["matrices"] for r in m["rows"]}
    assert {"fgsm eps=0.1", "fgsm eps=0.3"} <= matrix
