"""Run directories and the user's files: validate before writing, write only into a new or empty
directory (or a run advlab made, through --resume), absolute paths in config.yaml, and the real
command that continues an interrupted job."""
from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from advlab.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
CONFTEST = ROOT / "tests" / "conftest.py"

pytestmark = pytest.mark.usefixtures("in_tmp")


@pytest.fixture()
def digits_npz(digits, tmp_path) -> Path:
    x, y = digits.correct(4)
    path = tmp_path / "digits.npz"
    np.savez(path, x=(x.numpy() * 255).round().astype(np.uint8), y=y.numpy())
    return path


def attack_args(digits, data: Path | str, weights: Path | str | None = None) -> list[str]:
    return ["attack", "--method", "boundary", "--steps", "20", "--candidates", "1", "--model",
            f"{CONFTEST}:digits_net", "--weights", str(weights or digits.weights), "--mean", "0.5", "--std", "0.5",
            "--input-size", "8", "--data", f"tensors:{data}"]


def test_a_validation_error_writes_nothing_and_the_out_stays_usable(digits, digits_npz, tmp_path, run_error):
    """Before: the run directory was created, then the target class was found out of range; the stub
    (config.yaml + log.txt) made the same --out refused and --resume could not fix it."""
    out = tmp_path / "run"
    assert "out of range" in run_error(*attack_args(digits, digits_npz), "--target-class", "42", "--out", str(out))
    assert not out.exists()
    assert not (tmp_path / "reports").exists()
    target = str(int(digits.correct(4)[1][0]))  # a class some image has: a starting point exists
    assert main([*attack_args(digits, digits_npz), "--target-class", target, "--out", str(out)]) == 0
    assert (out / "results.json").is_file()


def test_never_writes_into_a_folder_of_the_users(digits, digits_npz, tmp_path, run_error, capsys):
    """Before: --out into an existing folder overwrote the user's own index.html."""
    mine = tmp_path / "my-site"
    mine.mkdir()
    (mine / "index.html").write_text("<h1>my page</h1>")
    err = run_error(*attack_args(digits, digits_npz), "--out", str(mine))
    assert "is not empty and holds no advlab run" in err
    assert (mine / "index.html").read_text() == "<h1>my page</h1>" and len(list(mine.iterdir())) == 1
    as_file = tmp_path / "a-file"
    as_file.write_text("x")
    assert "is a file" in run_error(*attack_args(digits, digits_npz), "--out", str(as_file))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*attack_args(digits, digits_npz), "--out", str(empty)]) == 0  # an empty folder is fine
    capsys.readouterr()
    err = run_error(*attack_args(digits, digits_npz), "--out", str(empty))
    assert "already holds a finished run" in err and f"advlab run --resume {empty}" in err


def test_config_stores_absolute_paths_and_resumes_from_anywhere(digits, tmp_path, monkeypatch):
    """Before: config.yaml kept paths as typed, so --resume from another directory failed."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    x, y = digits.correct(4)
    np.savez(work / "data" / "d.npz", x=(x.numpy() * 255).round().astype(np.uint8), y=y.numpy())
    (work / "w.pt").write_bytes(Path(digits.weights).read_bytes())
    (work / "names.txt").write_text("\n".join(f"digit {i}" for i in range(10)))
    monkeypatch.chdir(work)
    assert main([*attack_args(digits, "data/d.npz", "w.pt"), "--class-names", "names.txt", "--out", "run"]) == 0
    saved = yaml.safe_load((work / "run" / "config.yaml").read_text())
    assert saved["data"]["source"] == f"tensors:{work / 'data' / 'd.npz'}"
    assert saved["model"]["weights"] == str(work / "w.pt") and saved["model"]["class_names"] == str(work / "names.txt")
    assert saved["model"]["name"] == f"{CONFTEST}:digits_net" and saved["out"] == str(work / "run")
    first = json.loads((work / "run" / "results.json").read_text())["attacks"][0]
    (work / "run" / "results.json").unlink()
    for chunk in (work / "run" / "arrays").rglob("chunk-*.pt"):
        chunk.unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["run", "--resume", str(work / "run")]) == 0
    again = json.loads((work / "run" / "results.json").read_text())["attacks"][0]
    assert [s["l2"] for s in again["samples"]] == [s["l2"] for s in first["samples"]]
    assert again["samples"][0]["label_name"].startswith("digit ")


def test_an_interrupted_run_prints_the_command_that_continues_it(digits, digits_npz, tmp_path, monkeypatch, capsys):
    """Before: the literal text `advlab run --resume RUN_DIR`."""
    out = tmp_path / "stopped"

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("advlab.run.runner._execute", ctrl_c)
    assert main([*attack_args(digits, digits_npz), "--out", str(out)]) == 130
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"Continue with: advlab run --resume {out.resolve()}")
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    command = shlex.split(err.split("Continue with: ")[1])
    assert main(command[1:]) == 0 and (out / "results.json").is_file()


def test_an_interrupted_hgd_training_prints_its_own_command(fashion, tmp_path, monkeypatch, capsys):
    """Before: `advlab run --resume RUN_DIR`, which is wrong for training: running the same command
    again (with the same --out) is what continues it; without --out the stamp must be pinned."""
    args = ["defend", "--hgd", "--train", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights", str(fashion.weights),
            "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data", "fashion-mnist:train", "-n", "24",
            "--width", "0.125", "--epochs", "1", "--batch-size", "8", "--train-attacks", "fgsm", "--device", "cpu"]
    real_train = __import__("advlab.defenses.hgd_job", fromlist=["_train"])._train

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr("advlab.defenses.hgd_job._train", ctrl_c)
    assert main(args) == 130
    err = capsys.readouterr().err.strip()
    command = shlex.split(err.split("Continue with: ")[1])
    out = Path(command[command.index("--out") + 1])
    assert command[:3] == ["advlab", "defend", "--hgd"] and out.is_absolute() and out.is_dir()
    assert str(out).startswith(str(tmp_path / "reports" / "hgd-lgd-"))
    monkeypatch.setattr("advlab.defenses.hgd_job._train", real_train)
    assert main(command[1:]) == 0
    assert (out / "hgd-lgd.pt").is_file() and len(list((tmp_path / "reports").iterdir())) == 1


def test_samples_beyond_the_bound_go_to_a_sidecar_and_the_report_stays_bounded(fashion, tmp_path, monkeypatch):
    """results.json keeps its `samples` key but at most SAMPLES_IN_RESULTS records; all of them are in
    arrays/<tag>.samples.jsonl."""
    import json

    import advlab.run.rows
    from advlab.cli.main import main

    monkeypatch.setattr(advlab.run.rows, "SAMPLES_IN_RESULTS", 5)
    out = tmp_path / "run"
    assert main(["attack", "--method", "fgsm", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
                 str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data",
                 "fashion-mnist", "-n", "12", "--out", str(out)]) == 0
    row = json.loads((out / "results.json").read_text())["attacks"][0]
    assert len(row["samples"]) == 5 and row["samples_total"] == 12
    lines = (out / row["samples_file"]).read_text().splitlines()
    assert len(lines) == 12 and [json.loads(line) for line in lines[:5]] == row["samples"]
    html = (out / "index.html").read_text()
    assert "samples but the arrays hold" not in html


def test_arrays_keep_what_the_report_shows_and_every_adversarial_only_on_request(fashion, tmp_path, monkeypatch):
    import json

    import torch

    import advlab.run.rows
    from advlab.cli.main import main

    monkeypatch.setattr(advlab.run.rows, "REPORT_IMAGES", 4)
    monkeypatch.setattr(advlab.run.rows, "ADVERSARIAL_SHARD", 4)
    common = ["attack", "--method", "fgsm", "--model", "advlab.zoo.smallnets:fashion_cnn", "--weights",
              str(fashion.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "28", "--data",
              "fashion-mnist", "-n", "10"]
    assert main([*common, "--out", str(tmp_path / "small")]) == 0
    row = json.loads((tmp_path / "small" / "results.json").read_text())["attacks"][0]
    saved = torch.load(tmp_path / "small" / row["arrays"], weights_only=True)
    assert saved["x"].shape[0] == saved["x_adv"].shape[0] == 4 and int(saved["n_images"]) == 10
    image = 1 * 28 * 28 * 4  # bytes of one float32 image: the file holds 4 images twice, not the 10 of the row
    assert (tmp_path / "small" / row["arrays"]).stat().st_size < 2 * 4 * image + 4096
    assert not list((tmp_path / "small" / "arrays").glob("*.chunks"))  # resume checkpoints go when the run ends
    assert "adversarials_dir" not in row and not list((tmp_path / "small" / "arrays").glob("*.adversarials"))
    assert "samples but the arrays hold" not in (tmp_path / "small" / "index.html").read_text()
    assert main([*common, "--save-adversarials", "--out", str(tmp_path / "all")]) == 0
    row = json.loads((tmp_path / "all" / "results.json").read_text())["attacks"][0]
    shards = sorted((tmp_path / "all" / row["adversarials_dir"]).glob("shard-*.pt"))
    assert [p.name for p in shards] == ["shard-00000.pt", "shard-00001.pt", "shard-00002.pt"]  # 4 + 4 + 2 images
    parts = [torch.load(p, weights_only=True) for p in shards]
    everything = {"x_adv": torch.cat([p["x_adv"] for p in parts]), "names": [n for p in parts for n in p["names"]]}
    assert everything["x_adv"].dtype == torch.uint8 and everything["x_adv"].shape == (10, 1, 28, 28)
    assert everything["names"] == [s["name"] for s in row["samples"]]
    shown = torch.load(tmp_path / "all" / row["arrays"], weights_only=True)["x_adv"]  # float, the first 4
    assert (everything["x_adv"][:4].float() / 255 - shown).abs().max() <= 0.5 / 255 + 1e-6
