"""Registry-driven checks: every registered attack is tested the moment it is registered."""
from __future__ import annotations

import pytest
import torch

from advlab import registry
from advlab.attack import Attack
from advlab.cli import main
from advlab.tasks import Untargeted

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
    result = info.cls(**SMALL_SETTINGS[name])(digits.model, x, Untargeted(y), generator=torch.Generator().manual_seed(0))
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
