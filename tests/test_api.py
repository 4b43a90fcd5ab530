"""The library API (`advlab.attack`, `evaluate`, `load`, `Evaluation`) on a real trained model (the digits
CNN of conftest) and real images: the README's Python snippets run as written, an in-memory evaluation
gives every number the command line gives on the same model file, images file and seed, and a library
call leaves the caller's model and process as it found them."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import digits_net
from torch import nn

import advlab
from advlab.cli.main import main
from advlab.core.errors import AdvlabError
from advlab.core.results import SCHEMA, Results, json_schema, read_results

ROOT = Path(__file__).resolve().parents[1]
CONFTEST = ROOT / "tests" / "conftest.py"
VOLATILE = ("wall_s", "created", "model_images_per_s", "advlab_version", "torch", "python", "device")


class Normalise(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) / 0.5


def users_model(digits) -> nn.Module:
    """The digits CNN as a user holds it: their own nn.Module, taking [0, 1] images, in train mode."""
    net = digits_net()
    net.load_state_dict(torch.load(digits.weights, weights_only=True))
    return nn.Sequential(Normalise(), net)


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def hgd_checkpoint(digits, tmp_path_factory) -> Path:
    """An HGD for the digits, trained through the command line on 300 of them (as the README says)."""
    root = tmp_path_factory.mktemp("hgd")
    x, y = digits.x_test[:300], digits.y_test[:300]
    np.savez(root / "train.npz", x=(x.numpy() * 255).round().astype(np.uint8), y=y.numpy())
    assert main(["defend", "--hgd", "--train", "--model", f"{CONFTEST}:digits_net", "--weights", str(digits.weights),
                 "--mean", "0.5", "--std", "0.5", "--input-size", "8", "--data", f"tensors:{root / 'train.npz'}",
                 "--width", "0.25", "--epochs", "2", "--eps-max", "0.3", "--val-n", "50", "--out",
                 str(root / "hgd")]) == 0
    return root / "hgd" / "hgd-lgd.pt"


def test_the_readme_python_snippets_run_as_written(digits, hgd_checkpoint, tmp_path, monkeypatch, one_thread):
    """Three workflows: one attack on a batch (one line), the standard robust accuracy with the report saved
    (one line), a defense without, non-adaptive and adaptive. Each is asserted by its effect."""
    blocks = readme_python_blocks()
    assert len(blocks) == 3
    assert [len(b.strip().splitlines()) for b in blocks] == [2, 2, 2]  # torchattacks and AutoAttack take two
    monkeypatch.chdir(tmp_path)
    shutil.copy(hgd_checkpoint, tmp_path / "hgd.pt")
    model = users_model(digits)
    x, y = digits.x_test[:24], digits.y_test[:24]
    scope = {"model": model, "x": x, "y": y}

    exec(blocks[0], scope)  # the README's own text
    adv = scope["adv"]
    assert float((adv - x).abs().max()) <= 8 / 255 + 1e-6
    with torch.no_grad():
        clean, attacked = (model(x).argmax(1) == y).sum(), (model(adv).argmax(1) == y).sum()
    assert attacked < clean - 1  # PGD at 8/255 turns digits from right to wrong (24 -> 22 or fewer)

    exec(blocks[1], scope)
    ev = scope["ev"]
    assert isinstance(ev.robust_accuracy, float) and ev.robust_accuracy < ev.clean_accuracy
    assert (tmp_path / "reports" / "mine" / "index.html").is_file()
    assert advlab.load("reports/mine").robust_accuracy == ev.robust_accuracy
    parts = [r.attack for r in ev.matrices[0].rows]
    assert "standard: apgd-ce" in parts and "worst case" in parts

    exec(blocks[2], scope)
    ev = scope["ev"]
    settings = {(c.defense, c.setting) for c in ev.robustness.columns}
    assert {("jpeg q75", "non-adaptive"), ("jpeg q75", "adaptive")} <= settings
    assert any(d and d.startswith("hgd") for d, _ in settings)
    assert [d.method for d in ev.defenses] == ["jpeg", "hgd"]
    worst = ev.matrices[0].worst_case.accuracy
    assert worst[0] < ev.robustness.columns[0].clean_accuracy  # the bare model falls under attack
    assert model[1].training and next(model.parameters()).requires_grad  # the user's model as it was


def test_evaluate_in_memory_gives_every_number_of_the_command_line(digits, tmp_path, one_thread):
    """The same model (a factory file + weights vs the nn.Module), images (a tensors file vs tensors) and
    seed: every number of results.json is the same, timings aside."""
    x, y = digits.x_test[:16], digits.y_test[:16]
    images = tmp_path / "digits.npz"
    np.savez(images, x=x.numpy(), y=y.numpy())
    assert main(["attack", "--method", "pgd", "--eps", "0.1", "--steps", "5", "--model", f"{CONFTEST}:digits_net",
                 "--weights", str(digits.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "8",
                 "--data", f"tensors:{images}", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    net = digits_net()
    net.load_state_dict(torch.load(digits.weights, weights_only=True))
    ev = advlab.evaluate(net, (x, y), attacks="pgd", eps=0.1, steps=5, mean=[0.5], std=[0.5],
                         input_size=8, quiet=True)
    by_name = advlab.evaluate(f"{CONFTEST}:digits_net", f"tensors:{images}", attacks="pgd", eps=0.1, steps=5,
                              weights=str(digits.weights), mean=[0.5], std=[0.5], input_size=8, quiet=True)
    cli = json.loads((tmp_path / "cli" / "results.json").read_text())
    ours = json.loads(ev.results.to_json())
    assert numbers(cli) == numbers(ours) == numbers(json.loads(by_name.results.to_json()))
    assert len(numbers(cli)) > 50  # matrices, rows, per-image samples
    assert ev.robust_accuracy == cli["robustness"]["matrices"][0]["rows"][-1]["accuracy"][0] < 1.0


def numbers(tree, where: str = "") -> dict[str, float]:
    """Every number (bools included) of a JSON tree by its path, timings and versions left out."""
    if isinstance(tree, dict):
        return {k: v for key, value in tree.items() if key not in VOLATILE for k, v in
                numbers(value, f"{where}.{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, value in enumerate(tree) for k, v in numbers(value, f"{where}[{i}]").items()}
    return {where: tree} if isinstance(tree, int | float | bool) else {}


def test_the_terminal_shows_the_matrix_and_quiet_only_the_path(digits, tmp_path, capsys, one_thread):
    images = tmp_path / "d.npz"
    np.savez(images, x=digits.x_test[:8].numpy(), y=digits.y_test[:8].numpy())
    common = ["attack", "--method", "fgsm", "--eps", "0.2", "--model", f"{CONFTEST}:digits_net", "--weights",
              str(digits.weights), "--mean", "0.5", "--std", "0.5", "--input-size", "8", "--data", f"tensors:{images}"]
    assert main([*common, "--out", str(tmp_path / "a")]) == 0
    shown = capsys.readouterr().out
    results = read_results(tmp_path / "a")
    worst = results.robustness.matrices[0].worst_case.accuracy[0]
    assert "robust accuracy, linf eps 0.2" in shown and "worst case" in shown and f"{100 * worst:.1f}%" in shown
    assert shown.strip().splitlines()[-1] == f"report: {tmp_path / 'a' / 'index.html'}"
    assert main([*common, "--out", str(tmp_path / "b"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == f"report: {tmp_path / 'b' / 'index.html'}"


def test_results_read_back_typed_and_other_schema_versions_are_one_line(digits, tmp_path, one_thread):
    ev = advlab.evaluate(users_model(digits), (digits.x_test[:8], digits.y_test[:8]), attacks="fgsm",
                         threat="linf:0.2", out=tmp_path / "run", quiet=True)
    results = read_results(tmp_path / "run")
    assert isinstance(results, Results) and results.schema == SCHEMA
    assert json.loads(results.to_json()) == json.loads((tmp_path / "run" / "results.json").read_text())
    assert results.attacks[0].method == "fgsm" and 0 <= results.attacks[0].success_rate <= 1
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    for version, fix in ((SCHEMA + 1, "upgrade advlab"), (0, "re-run it")):
        (tmp_path / "run" / "results.json").write_text(json.dumps({**data, "schema": version}))
        with pytest.raises(AdvlabError, match=f"schema {version}.*{fix}"):
            advlab.load(tmp_path / "run")
    with pytest.raises(AdvlabError, match="already holds a finished run"):
        advlab.evaluate(users_model(digits), (digits.x_test[:8], digits.y_test[:8]), out=tmp_path / "run")
    assert ev.save(tmp_path / "copy") == tmp_path / "copy"
    assert {"results.json", "index.html", "config.yaml"} <= {p.name for p in (tmp_path / "copy").iterdir()}
    assert not any(p.name.startswith(".advlab") for p in (tmp_path / "copy").iterdir())  # no lock files
    with pytest.raises(AdvlabError, match="not an empty directory"):
        ev.save(tmp_path / "copy")


def test_the_published_schema_validates_every_kind_of_run():
    """`advlab schema` is generated from the types; the golden records of every config and README command
    (classification, defenses, universal, segmentation, detection) validate against it."""
    import jsonschema
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    records = sorted((ROOT / "bench" / "golden").glob("*.json"))
    assert len(records) >= 15
    for path in records:
        results = json.loads(path.read_text())["results"]
        results |= {key: "x" for key in ("created", "advlab_version", "torch", "python", "device")}
        for row in results["attacks"]:
            row["wall_s"] = 0.0
        errors = sorted(validator.iter_errors(results), key=str)
        assert not errors, f"{path.name}: {errors[0].message} at {list(errors[0].absolute_path)}"


def test_a_library_call_leaves_the_process_and_the_model_as_found(digits, one_thread):
    model = users_model(digits)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    advlab.attack(model, digits.x_test[:4], method="fgsm", eps=0.1)
    advlab.evaluate(model, (digits.x_test[:4], digits.y_test[:4]), attacks="fgsm", eps=0.1, quiet=True)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_allocator_policy_of_long_runs_is_opt_in_for_library_callers():
    """In a fresh interpreter: an evaluation leaves glibc's allocator and the heap trimming alone; the
    command line, or manage_heap=True, opts in."""
    script = f"""
import sys, torch
sys.path.insert(0, {str(ROOT / "tests")!r})
import advlab, advlab.core.device as device
from conftest import digits_net
x, y = torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.long)
advlab.evaluate(digits_net(), (x, y), attacks="fgsm", eps=0.1, quiet=True)
print(device._Heap.managed, device.keep_freed_memory.cache_info().currsize)
advlab.evaluate(digits_net(), (x, y), attacks="fgsm", eps=0.1, quiet=True, manage_heap=True)
print(device._Heap.managed, device.keep_freed_memory.cache_info().currsize)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.stdout.split() == ["False", "0", "True", "1"]


def test_in_memory_runs_say_how_to_continue_them(digits, tmp_path, run_error, one_thread):
    """An in-memory run's config names its model and data as Python objects: `advlab run --resume` says to
    continue it from Python, and the same call with the same out= does."""
    from advlab.core.config_yaml import load_config

    out = tmp_path / "run"
    advlab.evaluate(users_model(digits), (digits.x_test[:4], digits.y_test[:4]), attacks="fgsm", eps=0.1,
                    out=out, quiet=True)
    cfg = load_config(out / "config.yaml")
    assert cfg.model.name == "memory:Sequential" and cfg.data.source == "memory:tensors"
    (out / "results.json").unlink()
    assert "continue the run from Python" in run_error("run", "--resume", str(out))
    ev = advlab.evaluate(users_model(digits), (digits.x_test[:4], digits.y_test[:4]), attacks="fgsm", eps=0.1,
                         out=out, quiet=True)
    assert ev.run_dir == out and (out / "results.json").is_file()


class DigitsDataset(torch.utils.data.Dataset):
    """The digits as a user's map-style Dataset of (image, label) items; `targets` only where asked."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, *, with_targets: bool) -> None:
        self.x, self.y = x, y
        if with_targets:
            self.targets = y.tolist()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i], int(self.y[i])


def test_a_dataset_or_a_dataloader_gives_the_numbers_of_the_same_tensors(digits, one_thread):
    """data= as a map-style Dataset (labels from `targets`, or read item by item) or a DataLoader over one: the
    same per-image results as the (x, y) tensors, images read on demand."""
    x, y = digits.x_test[:12], digits.y_test[:12]
    common = {"attacks": "pgd", "eps": 0.1, "steps": 5, "quiet": True, "batch_size": 5}
    runs = [advlab.evaluate(users_model(digits), data, **common) for data in (
        (x, y), DigitsDataset(x, y, with_targets=True), DigitsDataset(x, y, with_targets=False),
        torch.utils.data.DataLoader(DigitsDataset(x, y, with_targets=True), batch_size=4))]
    first = numbers(json.loads(runs[0].results.to_json()))
    for ev in runs[1:]:
        assert numbers(json.loads(ev.results.to_json())) == first
    assert runs[1].results.data.name == "memory:DigitsDataset" and runs[0].robust_accuracy < 1.0
