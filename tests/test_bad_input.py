"""Every foreseeable bad input ends with exit status 2, one line naming the field, no traceback,
and nothing written (the fuzz-style table of the reliability issue); empty inputs are valid results."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from advlab.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
CONFTEST = ROOT / "tests" / "conftest.py"

pytestmark = pytest.mark.usefixtures("in_tmp")

MODELS = '''
import torch
from torch import nn


def raises():
    raise RuntimeError("boom in the factory")


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)), "aux"


def returns_tuple():
    return _Pair()


def not_a_module():
    return "a string"


class _Cube(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))[:, :, None]


def wrong_shape():
    return _Cube()


def integer_logits():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10), _Round())


class _Round(nn.Module):
    def forward(self, x):
        return x.round().long()


def no_args():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def exits():
    raise SystemExit(3)
'''


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.fixture()
def files(digits, tmp_path):
    """Digits images (tensors:FILE), the trained weights, user model factories and hostile files."""
    x, y = digits.correct(6)
    data = tmp_path / "digits.npz"
    np.savez(data, x=(x.numpy() * 255).round().astype(np.uint8), y=y.numpy())
    models = tmp_path / "models.py"
    models.write_text(MODELS)
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def net(:\n")
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Evil()))
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(4096))
    other = tmp_path / "other.pt"
    import torch
    torch.save(torch.nn.Linear(3, 2).state_dict(), other)
    return {"data": data, "models": models, "syntax": syntax, "evil": evil, "empty": empty, "noise": noise,
            "other": other, "weights": digits.weights}


def digits_model(f: dict) -> list[str]:
    return ["--model", f"{CONFTEST}:digits_net", "--weights", str(f["weights"]), "--mean", "0.5", "--std", "0.5",
            "--input-size", "8", "--data", f"tensors:{f['data']}"]


# (argv builder, a piece of the one line that names the problem)
CLI_CASES = {
    "negative target class": (lambda f: ["attack", "--method", "fgsm", *digits_model(f), "--target-class", "-1"],
                              "target_class (--target-class) must be a class index >= 0"),
    "target class out of range": (lambda f: ["attack", "--method", "boundary", *digits_model(f), "--target-class",
                                             "10"], "--target-class 10 is out of range"),
    "universal target out of range": (lambda f: ["attack", "--method", "universal", *digits_model(f),
                                                 "--target-class", "12"], "--target-class 12 is out of range"),
    "factory raises": (lambda f: ["attack", "--method", "fgsm", "--model", f"{f['models']}:raises", "--data",
                                  f"tensors:{f['data']}", "--input-size", "8"], "raised RuntimeError: boom"),
    "factory exits": (lambda f: ["attack", "--method", "fgsm", "--model", f"{f['models']}:exits", "--data",
                                 f"tensors:{f['data']}", "--input-size", "8"], "raised SystemExit"),
    "model returns a tuple": (lambda f: ["attack", "--method", "fgsm", "--model", f"{f['models']}:returns_tuple",
                                         "--weights", "none", "--data", f"tensors:{f['data']}", "--input-size", "8"],
                              "returned a tuple, not a tensor of logits"),
    "model returns 3-d output": (lambda f: ["attack", "--method", "fgsm", "--model", f"{f['models']}:wrong_shape",
                                            "--weights", "none", "--data", f"tensors:{f['data']}", "--input-size",
                                            "8"], "must return float logits of shape (N, classes)"),
    "model returns integers": (lambda f: ["attack", "--method", "fgsm", "--model",
                                          f"{f['models']}:integer_logits", "--weights", "none", "--data",
                                          f"tensors:{f['data']}", "--input-size", "8"], "torch.int64"),
    "factory returns no module": (lambda f: ["attack", "--method", "fgsm", "--model", f"{f['models']}:not_a_module",
                                             "--data", f"tensors:{f['data']}"], "not a torch.nn.Module"),
    "model file with a syntax error": (lambda f: ["attack", "--method", "fgsm", "--model", f"{f['syntax']}:net",
                                                  "--data", f"tensors:{f['data']}"], "failed to import: SyntaxError"),
    "missing model file": (lambda f: ["attack", "--method", "fgsm", "--model", "nowhere.py:net"],
                           "model file nowhere.py does not exist"),
    "missing factory": (lambda f: ["attack", "--method", "fgsm", "--model", f"{f['models']}:absent"],
                        "has no callable 'absent'"),
    "module that cannot import": (lambda f: ["attack", "--method", "fgsm", "--model", "no_such_pkg.nets:net"],
                                  "cannot import module 'no_such_pkg.nets'"),
    "num-classes disagrees": (lambda f: ["attack", "--method", "fgsm", "--model", f"{f['models']}:no_args",
                                         "--weights", "none", "--num-classes", "5", "--data",
                                         f"tensors:{f['data']}", "--input-size", "8"],
                              "--num-classes 5 but the model"),
    "weights: a hostile pickle": (lambda f: ["attack", "--method", "fgsm", "--model", f"{CONFTEST}:digits_net",
                                             "--weights", str(f["evil"]), "--data", f"tensors:{f['data']}"],
                                  "cannot load weights"),
    "weights: an empty file": (lambda f: ["attack", "--method", "fgsm", "--model", f"{CONFTEST}:digits_net",
                                          "--weights", str(f["empty"]), "--data", f"tensors:{f['data']}"],
                               "cannot load weights"),
    "weights: random bytes": (lambda f: ["attack", "--method", "fgsm", "--model", f"{CONFTEST}:digits_net",
                                         "--weights", str(f["noise"]), "--data", f"tensors:{f['data']}"],
                              "cannot load weights"),
    "weights of another model": (lambda f: ["attack", "--method", "fgsm", "--model", f"{CONFTEST}:digits_net",
                                            "--weights", str(f["other"]), "--data", f"tensors:{f['data']}"],
                                 "do not fit the model"),
    "missing weights file": (lambda f: ["attack", "--method", "fgsm", "--model", f"{CONFTEST}:digits_net",
                                        "--weights", "nowhere.pt"], "weights file nowhere.pt does not exist"),
    "a setting of the wrong type": (lambda f: ["attack", "--method", "boundary", *digits_model(f), "--set",
                                               "spherical_step=abc"], "spherical_step must be a number (or null), got 'abc'"),
    "a list where a scalar belongs": (lambda f: ["attack", "--method", "boundary", *digits_model(f), "--set",
                                                 "steps=[1, 2.5]"], "steps must be an integer"),
    "a float where an int belongs": (lambda f: ["attack", "--method", "boundary", *digits_model(f), "--candidates",
                                                "2", "--set", "adapt_window=2.5"], "adapt_window must be an integer"),
    "a bool where a number belongs": (lambda f: ["attack", "--method", "pgd", *digits_model(f), "--set",
                                                 "step_size=true"], "step_size must be a number"),
    "an unknown setting": (lambda f: ["attack", "--method", "pgd", *digits_model(f), "--set", "stepz=3"],
                           "no setting 'stepz'"),
    "malformed --set": (lambda f: ["attack", "--method", "pgd", *digits_model(f), "--set", "steps"],
                        "write settings as KEY=VALUE"),
    "eps out of range": (lambda f: ["attack", "--method", "fgsm", *digits_model(f), "--eps", "2"], "eps"),
    "foolbox with many candidates": (lambda f: ["attack", "--method", "boundary", *digits_model(f), "--backend",
                                                "foolbox", "--candidates", "4"], "candidates must be 1"),
    "missing data file": (lambda f: ["attack", "--method", "fgsm", "--data", "tensors:nowhere.npz"],
                          "nowhere.npz does not exist"),
    "unknown data source": (lambda f: ["attack", "--method", "fgsm", "--data", "imagenet-val"],
                            "unknown image source 'imagenet-val'"),
    "too many images": (lambda f: ["attack", "--method", "fgsm", *digits_model(f), "-n", "99"], "lower -n"),
    "unknown device": (lambda f: ["attack", "--method", "fgsm", *digits_model(f), "--device", "tpu"],
                       "unknown device 'tpu'"),
    "a name that escapes reports/": (lambda f: ["attack", "--method", "fgsm", *digits_model(f), "--name",
                                                "../../escaped"], "name (--name)"),
    "zero batch size": (lambda f: ["attack", "--method", "fgsm", *digits_model(f), "--batch-size", "0"],
                        "batch_size (--batch-size)"),
    "negative seed": (lambda f: ["attack", "--method", "fgsm", *digits_model(f), "--seed", "-1"], "seed (--seed)"),
    "unknown list entry": (lambda f: ["list", "nope"], "no attack or defense named 'nope'"),
    "report of no run": (lambda f: ["report", str(f["data"].parent)], "results.json not found"),
    "resume of no run": (lambda f: ["run", "--resume", str(f["data"].parent)], "no config.yaml there"),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_bad_command_lines(case, files, run_error, tmp_path):
    build, expected = CLI_CASES[case]
    out = tmp_path / "out"
    argv = build(files)
    if argv[0] in ("attack", "defend", "run") and "--resume" not in argv:
        argv += ["--out", str(out)]
    before = sorted(p.name for p in tmp_path.iterdir())
    err = run_error(*argv)
    assert expected in err, err
    assert not out.exists(), "a failed validation must not create the run directory"
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing else written either (reports/ included)


YAML_CASES = {
    "empty file": ("", "is empty"),
    "only a comment": ("# nothing here\n", "is empty"),
    "invalid syntax": ("model: {name: [unclosed\n", "not valid YAML"),
    "a list at the top": ("- method: boundary\n", "must be a mapping of settings, got a list"),
    "a python tag": ("attacks: !!python/object/apply:os.system ['echo pwned']\n", "not valid YAML"),
    "unknown key": ("modle: {name: resnet50}\n", "unknown key 'modle'"),
    "seed of the wrong type": ("seed: abc\n", "seed: expected int"),
    "a list where a scalar belongs": ("batch_size: [1, 2]\n", "batch_size: expected int"),
    "a bool where an int belongs": ("batch_size: true\n", "batch_size: expected int"),
    "a mapping where a string belongs": ("device: {kind: cuda}\n", "device: expected str"),
    "model as a string": ("model: resnet50\n", "model must be a mapping"),
    "models not a list": ("models: {name: resnet50}\n", "models must be a list"),
    "attacks as a mapping": ("attacks: {method: boundary}\n", "'attacks' must be a non-empty list"),
    "attacks empty": ("attacks: []\n", "'attacks' must be a non-empty list"),
    "attack without method": ("attacks: [{steps: 3}]\n", "attacks[0] must be a mapping with a 'method' key"),
    "attack setting of the wrong type": ("attacks: [{method: boundary, steps: many}]\n",
                                         "steps must be an integer (or null), got 'many'"),
    "a sweep with a bad value": ("attacks: [{method: pgd, eps: [0.1, abc]}]\n", "eps must be a number"),
    "two sweeps in one entry": ("attacks: [{method: pgd, eps: [0.1, 0.2], steps: [1, 2]}]\n",
                                "sweeps eps and steps; sweep one setting per entry"),
    "an empty sweep": ("attacks: [{method: pgd, eps: []}]\n", "eps is an empty list"),
    "attack setting as null": ("attacks: [{method: pgd, steps: null}]\n", "steps must be an integer, got None"),
    "fraction dividing by zero": ("attacks: [{method: pgd, eps: 1/0}]\n", "divides by zero"),
    "target class below zero": ("attacks: [{method: boundary, target_class: -2}]\n", "target_class must be"),
    "unknown attack": ("attacks: [{method: bondary}]\n", "unknown attack method 'bondary'"),
    "defense setting of the wrong type": ("attacks: [{method: fgsm}]\ndefenses: [{method: jpeg, quality: high}]\n",
                                          "quality must be an integer, got 'high'"),
    "unknown defense": ("attacks: [{method: fgsm}]\ndefenses: [{method: nosuch}]\n", "unknown defense 'nosuch'"),
    "defense adaptive not a bool": ("attacks: [{method: fgsm}]\ndefenses: [{method: jpeg, adaptive: maybe}]\n",
                                    "adaptive must be true or false"),
    "hgd without checkpoint": ("attacks: [{method: fgsm}]\ndefenses: [{method: hgd}]\n",
                               "needs the setting 'checkpoint'"),
    "hgd checkpoint missing": ("attacks: [{method: fgsm}]\ndefenses: [{method: hgd, checkpoint: nowhere.pt}]\n",
                               "nowhere.pt"),
    "name with a slash": ("name: a/b\n", "name (--name)"),
    "negative n": ("data: {n: -3}\n", "data.n"),
    "precision unknown": ("precision: fp8\n", "precision (--precision) must be"),
    "negative input size": ("model: {name: resnet18, input_size: -4}\n", "model.input_size"),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_bad_config_files(case, run_error, tmp_path):
    text, expected = YAML_CASES[case]
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    err = run_error("run", str(config), "--out", str(out))
    assert expected in err, err
    assert not out.exists()


def test_missing_config_file(run_error):
    assert "config file nowhere.yaml does not exist" in run_error("run", "nowhere.yaml")


# ---------------------------------------------------------------- empty inputs are valid results
def _rows(out: Path) -> list[dict]:
    return json.loads((out / "results.json").read_text())["attacks"]


def test_no_image_to_attack_is_a_row_with_n_attacked_0(files, digits, tmp_path):
    """Every image already in the target class, and a model that misclassifies everything: rows with
    n_attacked 0 and no success rate, not a crash."""
    x, y = digits.correct(40)
    keep = (y == 3).numpy()
    same = tmp_path / "threes.npz"
    np.savez(same, x=(x[keep].numpy() * 255).round().astype(np.uint8), y=y[keep].numpy())
    args = ["--model", f"{CONFTEST}:digits_net", "--weights", str(files["weights"]), "--mean", "0.5", "--std", "0.5",
            "--input-size", "8"]
    for method in ("boundary", "pgd"):
        out = tmp_path / f"targeted-{method}"
        assert main(["attack", "--method", method, *args, "--data", f"tensors:{same}", "--target-class", "3",
                     "--out", str(out)]) == 0
        row = _rows(out)[0]
        assert row["n_attacked"] == 0 and row["success_rate"] is None and row["queries_total"] == 0
        assert row["fooling_ratio"] == 0.0 and row["accuracy"] == 1.0 and row["median_l2"] is None
        assert "boundary" in (out / "index.html").read_text() or "pgd" in (out / "index.html").read_text()
    wrong = tmp_path / "wrong.npz"  # every label shifted: the model is wrong on every image
    np.savez(wrong, x=(x[:6].numpy() * 255).round().astype(np.uint8), y=((y[:6] + 1) % 10).numpy())
    out = tmp_path / "all-wrong"
    assert main(["attack", "--method", "pgd", *args, "--data", f"tensors:{wrong}", "--out", str(out)]) == 0
    row = _rows(out)[0]
    assert row["n_attacked"] == 0 and row["clean_accuracy"] == 0.0 and row["accuracy"] == 0.0


def test_a_model_without_weights_is_named_not_silent(files, capsys, tmp_path):
    out = tmp_path / "random"
    assert main(["attack", "--method", "fgsm", "--model", f"{files['models']}:no_args", "--input-size", "8",
                 "--data", f"tensors:{files['data']}", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "advlab: warning: --model" in err and "has no --weights" in err
    assert json.loads((out / "results.json").read_text())["model"]["weights"] == "factory"
    out = tmp_path / "said-none"  # --weights none: the random initialisation is meant, no warning
    assert main(["attack", "--method", "fgsm", "--model", f"{files['models']}:no_args", "--weights", "none",
                 "--input-size", "8", "--data", f"tensors:{files['data']}", "--out", str(out)]) == 0
    assert "warning" not in capsys.readouterr().err
    assert json.loads((out / "results.json").read_text())["model"]["weights"] == "none"
