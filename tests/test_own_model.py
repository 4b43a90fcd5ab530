"""Your own model file without surprises (issue 34): a factory file that imports a module beside it loads
from any working directory, as `python FILE` would import it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn


def test_a_factory_file_imports_the_modules_beside_it(tmp_path, digits):
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "mynet.py").write_text(f"import sys\nsys.path.insert(0, {str(Path(__file__).resolve().parent)!r})\n"
                                     "from conftest import digits_net\n")
    (folder / "model.py").write_text("from mynet import digits_net\n\n\ndef factory():\n    return digits_net()\n")
    x, y = digits.correct(4)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-m", "advlab.cli.main", "attack", "--method", "fgsm", "--eps", "0.1",
                          "--model", f"{folder / 'model.py'}:factory", "--weights", str(digits.weights), "--mean",
                          "0.5", "--std", "0.5", "--input-size", "8", "--data", f"tensors:{tmp_path / 'd.npz'}",
                          "--out", str(tmp_path / "run"), "--quiet"], cwd=elsewhere, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"report: {tmp_path / 'run' / 'index.html'}"


def test_debug_shows_the_traceback_before_or_after_the_verb(tmp_path):
    """`advlab --debug attack ...` (as --help puts it) and `advlab attack --debug ...` both raise the error with
    its traceback; without --debug it is one line, exit 2."""
    from advlab.cli.main import main
    from advlab.core.errors import AdvlabError

    bad = ["--method", "fgsm", "--data", f"tensors:{tmp_path / 'missing.npz'}"]
    for argv in (["--debug", "attack", *bad], ["attack", "--debug", *bad]):
        with pytest.raises(AdvlabError, match="does not exist"):
            main(argv)
    assert main(["attack", *bad]) == 2


FACTORIES = '''
import torch
from torch import nn
import sys
sys.path.insert(0, {tests!r})
from conftest import digits_net


def double():
    return digits_net().double()


def on_meta():
    with torch.device("meta"):
        return digits_net()
'''


@pytest.fixture()
def own(tmp_path, digits):
    """A factories file, the digits as a tensors file, and the digits weights saved three ways."""
    (tmp_path / "own.py").write_text(FACTORIES.format(tests=str(Path(__file__).resolve().parent)))
    x, y = digits.correct(4)
    np.savez(tmp_path / "d.npz", x=x.numpy(), y=y.numpy())
    state = torch.load(digits.weights, weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "parallel.pt")
    torch.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "pickled.pt")  # a whole pickled model
    return tmp_path


def _attack(own: Path, model: str, weights: str, *extra: str) -> list[str]:
    return ["attack", "--method", "fgsm", "--eps", "0.1", "--model", model, "--weights", weights, "--mean", "0.5",
            "--std", "0.5", "--input-size", "8", "--data", f"tensors:{own / 'd.npz'}", *extra]


def test_rough_edges_of_your_own_model_each_name_the_cause(own, digits, run_error, capsys, one_thread):
    from advlab.cli.main import main

    # a float64 model runs in float64 (it used to be told to set --input-size)
    assert main([*_attack(own, f"{own / 'own.py'}:double", str(digits.weights)), "--out", str(own / "r64"),
                 "--quiet"]) == 0
    assert json.loads((own / "r64" / "results.json").read_text())["clean"]["accuracy"] == 1.0
    # DataParallel weights: the module. prefix is dropped, with a note
    conftest = Path(__file__).resolve().parent / "conftest.py"
    assert main([*_attack(own, f"{conftest}:digits_net", str(own / "parallel.pt")), "--out", str(own / "rdp"),
                 "--quiet"]) == 0
    assert "'module.' prefix is dropped" in capsys.readouterr().err
    assert json.loads((own / "rdp" / "results.json").read_text())["clean"]["accuracy"] == 1.0
    # a model on the meta device
    err = run_error(*_attack(own, f"{own / 'own.py'}:on_meta", "none"))
    assert "meta device" in err and "assign=True" in err and "--input-size" not in err
    # a whole pickled model: one line, no terminal colour codes
    err = run_error(*_attack(own, f"{conftest}:digits_net", str(own / "pickled.pt")))
    assert "cannot load weights" in err and "\x1b[" not in err
    # a NaN pixel: which image
    x = np.load(own / "d.npz")["x"].copy()
    x[2, 0, 3, 3] = np.nan
    np.savez(own / "nan.npz", x=x, y=np.load(own / "d.npz")["y"])
    err = run_error(*[a if not a.startswith("tensors:") else f"tensors:{own / 'nan.npz'}"
                      for a in _attack(own, f"{conftest}:digits_net", str(digits.weights))])
    assert "NaN or infinite values (the first in image 2)" in err


def test_class_named_folders_point_to_class_names(tmp_path, digits, run_error):
    from PIL import Image

    for name in ("zero", "one"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(tmp_path / "imgs" / name / "a.png")
    conftest = Path(__file__).resolve().parent / "conftest.py"
    err = run_error("attack", "--method", "fgsm", "--model", f"{conftest}:digits_net", "--weights",
                    str(digits.weights), "--input-size", "8", "--data", f"folder:{tmp_path / 'imgs'}")
    assert "--class-names FILE" in err
