"""Registry-driven checks: every registered attack is tested the moment it is registered."""
from __future__ import annotations

import pytest
import torch

from advlab import registry
from advlab.attack import Attack
from advlab.cli import main
from advlab.criteria import Untargeted
from advlab.evaluate import attack_in_chunks

# Small budgets per attack for the shared checks; a new plugin must add its entry here.
SMALL_SETTINGS: dict[str, dict] = {
    "boundary": {"steps": 150, "candidates": 2, "progress": False},
    "fgsm": {"eps": 0.3},
    "pgd": {"eps": 0.3},
    "universal": {"solver": "deepfool", "norm": "l2", "eps": 3.0, "delta": 0.0, "batch_size": 1, "progress": False},
}


@pytest.mark.parametrize("name", list(registry.attacks()))
def test_every_attack_fools_a_trained_model(name, digits):
    assert name in SMALL_SETTINGS, f"add small test settings for the new attack {name!r}"
    info = registry.get_attack(name)
    assert issubclass(info.cls, Attack) and info.threat and info.tasks and info.summary
    x, y = digits.correct(16)
    result = info.cls(**SMALL_SETTINGS[name])(digits.model, x, Untargeted(y), seed=0)
    assert result.x_adv.shape == x.shape and 0 <= float(result.x_adv.min()) and float(result.x_adv.max()) <= 1
    with torch.no_grad():
        accuracy = (digits.model(result.x_adv).argmax(1) == y).float().mean()
    assert accuracy <= 0.1
    assert result.success.float().mean() >= 0.9
    assert (result.queries > 0).all() and torch.isfinite(result.distance[result.success]).all()


def test_list_shows_capabilities(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "boundary" in out and "threat=decision" in out and "classification" in out
    assert "hgd" in out and "jpeg         adaptive=bpda" in out and "median       adaptive=exact" in out


@pytest.mark.parametrize("name", list(registry.attacks()))
def test_every_attack_gives_each_image_the_same_result_in_any_batch(name, digits, tmp_path):
    """The randomness rule: an image's result depends on the seed and its own pixels only, never on
    the chunking (batch sizes 1, 3 and all), its position or the other images in its chunk.
    A universal perturbation is one object for the whole set: same seed, same v."""
    info = registry.get_attack(name)
    x, y = digits.correct(7)
    runs = {}
    for batch_size in (1, 3, 7) if not getattr(info.cls, "universal", False) else (7, 7):
        attack = info.cls(**SMALL_SETTINGS[name])
        runs[batch_size] = attack_in_chunks(attack, digits.model, x, Untargeted(y), starting_points=None,
                                            batch_size=batch_size, device=torch.device("cpu"), seed=5,
                                            chunk_dir=tmp_path / f"{name}-{batch_size}-{len(runs)}")
    first = runs[7]
    assert first.success.float().mean() > 0.5  # the attack did something worth comparing
    for batch_size, run in runs.items():
        assert torch.equal(run.x_adv, first.x_adv), f"{name}: batch size {batch_size} changed x_adv"
        assert torch.equal(run.success, first.success) and torch.equal(run.queries, first.queries)
        for key, value in first.extras.items():
            assert torch.equal(run.extras[key], value), key
    # the same images in reverse order, as one chunk: each image keeps its own result
    flipped = attack_in_chunks(info.cls(**SMALL_SETTINGS[name]), digits.model, x.flip(0), Untargeted(y.flip(0)),
                               starting_points=None, batch_size=7, device=torch.device("cpu"), seed=5,
                               chunk_dir=tmp_path / f"{name}-flipped")
    if not getattr(info.cls, "universal", False):
        assert torch.equal(flipped.x_adv.flip(0), first.x_adv)
    # another seed draws other noise (for the attacks that draw any)
    other = attack_in_chunks(info.cls(**SMALL_SETTINGS[name]), digits.model, x, Untargeted(y), starting_points=None,
                             batch_size=7, device=torch.device("cpu"), seed=6, chunk_dir=tmp_path / f"{name}-seed6")
    assert torch.equal(other.x_adv, first.x_adv) == (name in DETERMINISTIC), name


DETERMINISTIC = {"fgsm"}  # attacks that draw nothing at random: the seed does not matter
