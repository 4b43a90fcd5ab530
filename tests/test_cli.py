"""The command line end to end: real MobileNetV2 run, bring-your-own model, YAML runs, resume,
report re-rendering, and the one-line errors (exit status 2) a user gets for bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest

from advlab.cli.main import main
from advlab.core.config import RunConfig
from advlab.core.config_yaml import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFTEST = ROOT / "tests" / "conftest.py"


pytestmark = pytest.mark.usefixtures("in_tmp")  # runs without --out land in the test's directory


def advlab(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "advlab.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd or ROOT, timeout=600)


def test_default_attack_on_real_mobilenet_writes_a_full_run(tmp_path):
    out = tmp_path / "run"
    p = advlab("attack", "--method", "boundary", "-n", "2", "--steps", "25", "--candidates", "1", "--out", str(out))
    assert p.returncode == 0, p.stderr
    assert f"report: {out / 'index.html'}" in p.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["model"]["name"] == "mobilenet_v2" and results["model"]["weights"] == "IMAGENET1K_V1"
    assert results["data"] == {"name": "imagenet-samples", "n": 2, "label_source": "ground-truth"}
    row = results["attacks"][0]
    for key in ("method", "defense", "adaptive", "params", "success_rate", "fooling_ratio", "accuracy", "median_l2",
                "median_linf", "median_mse", "queries_median", "wall_s", "model_images_per_s"):
        assert key in row, key
    assert results["clean"]["accuracy"] == 1.0
    assert row["success_rate"] == 1.0 and row["accuracy"] == 0.0 and row["fooling_ratio"] == 1.0
    assert row["median_l2"] > 0 and row["queries_median"] > 25
    assert row["samples"][0]["label_name"] and row["samples"][0]["adv_pred"] != row["samples"][0]["label"]
    resolved = (out / "config.yaml").read_text()
    assert "source_factor" in resolved  # every default is written out
    html = (out / "index.html").read_text()
    # 2 photos shown at the figure's size (JPEG: clean, adversarial) and their amplified perturbations (PNG)
    assert "mobilenet_v2" in html and html.count("data:image/jpeg;base64,") == 2 * 2
    assert html.count("data:image/png;base64,") >= 2
    (out / "index.html").unlink()
    assert advlab("report", str(out)).returncode == 0 and (out / "index.html").exists()


@pytest.fixture()
def digits_files(digits, tmp_path):
    x, y = digits.correct(6)
    data = tmp_path / "digits.npz"
    np.savez(data, x=(x.numpy() * 255).round().astype(np.uint8), y=y.numpy())
    return data


def byo_args(digits, data: Path) -> list[str]:
    return ["--model", f"{CONFTEST}:digits_net", "--weights", str(digits.weights), "--data", f"tensors:{data}",
            "--mean", "0.5", "--std", "0.5", "--input-size", "8"]


def test_bring_your_own_model_cli_and_yaml(digits, digits_files, tmp_path):
    out = tmp_path / "byo"
    assert main(["attack", "--method", "boundary", *byo_args(digits, digits_files), "--steps", "150",
                 "--out", str(out)]) == 0
    row = json.loads((out / "results.json").read_text())["attacks"][0]
    assert row["success_rate"] == 1.0 and row["accuracy"] == 0.0
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"""
name: digits
seed: 3
device: cpu
model: {{name: "{CONFTEST}:digits_net", weights: "{digits.weights}", mean: [0.5], std: [0.5], input_size: 8}}
data: {{source: "tensors:{digits_files}", n: 4}}
attacks:
  - {{method: boundary, steps: 100, candidates: 2}}
  - {{method: boundary, steps: 100, candidates: 2, target_class: {int(digits.correct(6)[1][0])}}}
""")
    out2 = tmp_path / "yaml"
    assert main(["run", str(cfg), "--out", str(out2)]) == 0
    results = json.loads((out2 / "results.json").read_text())
    assert results["seed"] == 3 and results["data"]["n"] == 4
    untargeted, targeted = results["attacks"]
    assert untargeted["success_rate"] == 1.0
    assert targeted["criterion"] == "targeted" and targeted["success_rate"] == 1.0
    assert all(s["adv_pred"] == targeted["target_class"] for s in targeted["samples"])


def interrupted_in_chunk(monkeypatch, chunk: int):
    """Make the attack stop with Ctrl-C when it reaches chunk `chunk` (counted from 0), as a kill would."""
    from advlab.run import chunks as evaluate

    calls, real = {"n": 0}, evaluate.attack_in_chunks.__globals__["synchronize"]

    def counting(device):
        calls["n"] += 1
        if calls["n"] > 2 * chunk:  # synchronize runs twice per computed chunk
            raise KeyboardInterrupt
        real(device)

    monkeypatch.setattr(evaluate, "synchronize", counting)


def test_resume_reuses_finished_chunks(digits, digits_files, tmp_path, monkeypatch):
    full, out = tmp_path / "full", tmp_path / "resumable"
    args = ["attack", "--method", "boundary", *byo_args(digits, digits_files), "--steps", "60", "--batch-size", "2"]
    assert main([*args, "--out", str(full)]) == 0
    first = json.loads((full / "results.json").read_text())["attacks"][0]
    assert not list((full / "arrays").glob("*.chunks"))  # a finished run keeps no resume checkpoints
    with monkeypatch.context() as patch:
        interrupted_in_chunk(patch, 2)  # killed in the last of 3 chunks
        assert main([*args, "--out", str(out)]) == 130
    chunks = sorted((out / "arrays" / "boundary-0.chunks").glob("chunk-*.pt"))
    assert len(chunks) == 2 and not (out / "results.json").exists()
    from advlab.run import chunks as evaluate

    computed = []
    real = evaluate.synchronize
    monkeypatch.setattr(evaluate, "synchronize", lambda device: computed.append(1) or real(device))
    assert main(["run", "--resume", str(out)]) == 0
    assert len(computed) == 2  # one chunk computed (two syncs around it): the two finished ones were reused
    again = json.loads((out / "results.json").read_text())["attacks"][0]
    assert again["median_l2"] == pytest.approx(first["median_l2"], rel=1e-5)
    assert again["samples"] == first["samples"]


def test_quickstart_is_the_embedded_default():
    cfg = load_config(ROOT / "configs" / "quickstart.yaml")
    default = RunConfig()
    assert cfg.model == default.model and cfg.data.source == default.data.source
    assert [a.method for a in cfg.attacks] == ["boundary"]



def test_bad_inputs_give_one_line_and_exit_2(run_error, tmp_path, digits, digits_files):
    assert "unknown attack method 'nope'" in run_error("attack", "--method", "nope", "-n", "1")
    assert "unknown model 'resnet5'" in run_error("attack", "--method", "boundary", "--model", "resnet5")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {name: [unclosed\n")
    assert "not valid YAML" in run_error("run", str(bad_yaml))
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("modle: {name: resnet50}\n")
    assert "unknown key 'modle'" in run_error("run", str(unknown))
    bad_setting = tmp_path / "setting.yaml"
    bad_setting.write_text("attacks: [{method: boundary, stepz: 3}]\n")
    assert "no setting 'stepz'" in run_error("run", str(bad_setting))
    shape = tmp_path / "shape.npz"
    np.savez(shape, x=np.zeros((2, 5, 8, 8), np.float32))
    err = run_error("attack", "--method", "boundary", *byo_args(digits, shape))
    assert "shape" in err
    corrupt = tmp_path / "weights.pt"
    corrupt.write_bytes(b"not a checkpoint")
    err = run_error("attack", "--method", "boundary", "--model", f"{CONFTEST}:digits_net",
                    "--weights", str(corrupt), "--data", f"tensors:{digits_files}")
    assert "cannot load weights" in err
    assert "must be >= 1" in run_error("attack", "--method", "boundary", "-n", "0")
    assert "steps must be a positive integer" in run_error("attack", "--method", "boundary", "--steps", "0")


def test_missing_weights_offline_names_the_cache(run_error, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise URLError("no network")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)  # as if offline
    err = run_error("attack", "--method", "boundary", "--model", "resnet18", "-n", "1")
    assert "resnet18" in err and "copy resnet18-" in err and "torch-home" in err


def test_debug_flag_shows_the_traceback():
    with pytest.raises(Exception, match="unknown attack method"):
        main(["attack", "--method", "nope", "--debug"])


def test_starting_image_sets_the_target(tmp_path):
    from PIL import Image

    from advlab.data.sources import load_images
    from advlab.zoo.models import load_model

    model = load_model("mobilenet_v2", "IMAGENET1K_V1")
    samples = load_images("imagenet-samples", model, n=4)
    image = tmp_path / "start <b>.png"
    Image.fromarray((samples.x[3].permute(1, 2, 0).numpy() * 255).round().astype("uint8")).save(image)
    out = tmp_path / "targeted"
    assert main(["attack", "--method", "boundary", "-n", "2", "--steps", "10", "--candidates", "1",
                 "--starting-image", str(image), "--out", str(out)]) == 0
    row = json.loads((out / "results.json").read_text())["attacks"][0]
    assert row["criterion"] == "targeted" and row["target_class"] == int(samples.y[3])
    assert row["success_rate"] == 1.0
    assert all(s["adv_pred"] == int(samples.y[3]) for s in row["samples"])


def test_nan_logits_are_a_clear_error(run_error, tmp_path, digits_files):
    src = tmp_path / "broken.py"
    src.write_text("import torch\n"
                   "class Broken(torch.nn.Module):\n"
                   "    def __init__(self):\n        super().__init__()\n        self.fc = torch.nn.Linear(64, 10)\n"
                   "    def forward(self, x):\n        return self.fc(x.flatten(1)) * float('nan')\n"
                   "def net():\n    return Broken()\n")
    err = run_error("attack", "--method", "boundary", "--model", f"{src}:net", "--weights", "none",
                    "--input-size", "8", "--data", f"tensors:{digits_files}")
    assert "NaN or inf logits" in err
