"""Results do not depend on --batch-size: the randomness rule end to end, through the command line
(issue: `--batch-size 32 / 4 / 2` gave median L2 6.83 vs 6.25 on the same 8 Fashion-MNIST images)."""
from __future__ import annotations

import json

import pytest

from advlab.cli.main import main

FASHION_MODEL = ["--model", "advlab.zoo.smallnets:fashion_cnn", "--mean", "0.5", "--std", "0.5", "--input-size", "28",
                 "--data", "fashion-mnist:test"]


def per_image(run_dir) -> list[tuple]:
    rows = json.loads((run_dir / "results.json").read_text())["attacks"]
    return [[(s["name"], s["success"], s["l2"], s["queries"], s["adv_pred"]) for s in row["samples"]] for row in rows]


@pytest.mark.parametrize("method,settings", [
    ("boundary", ["--max-queries", "200"]),
    ("pgd", ["--eps", "0.1", "--steps", "5"]),
    ("apgd", ["--eps", "0.1", "--steps", "12", "--set", "loss=dlr"]),
    ("square", ["--eps", "0.2", "--max-queries", "100"]),
    ("square", ["--eps", "3.0", "--norm", "l2", "--max-queries", "100"]),
])
def test_batch_size_never_changes_a_per_image_result(fashion, tmp_path, method, settings):
    results = {}
    for batch_size in (32, 4, 2):
        out = tmp_path / f"{method}-{batch_size}"
        assert main(["attack", "--method", method, *settings, "-n", "8", *FASHION_MODEL, "--weights",
                     str(fashion.weights), "--batch-size", str(batch_size), "--out", str(out)]) == 0
        results[batch_size] = per_image(out)
    assert results[32] == results[4] == results[2]
    assert any(s[1] for s in results[32][0])  # images were fooled: there is something to compare


def test_a_resumed_run_equals_an_uninterrupted_one_with_another_batch_size(fashion, tmp_path, monkeypatch):
    """A run resumed after its chunks were cut differently equals an uninterrupted one."""
    from test_cli import interrupted_in_chunk

    full = tmp_path / "full"
    args = ["attack", "--method", "boundary", "--max-queries", "150", "-n", "6", *FASHION_MODEL, "--weights",
            str(fashion.weights)]
    assert main([*args, "--batch-size", "6", "--out", str(full)]) == 0
    cut = tmp_path / "cut"
    with monkeypatch.context() as patch:
        interrupted_in_chunk(patch, 1)  # stopped after the first chunk of 2 images
        assert main([*args, "--batch-size", "2", "--out", str(cut)]) == 130
    assert len(list((cut / "arrays" / "boundary-0.chunks").glob("chunk-*.pt"))) == 1
    assert main(["run", "--resume", str(cut)]) == 0
    assert per_image(cut) == per_image(full)
