"""Shared fixtures: a small CNN trained on real handwritten digits (scikit-learn's copy of the UCI
8x8 digits, 1,797 images) in a few seconds on CPU, wrapped like any advlab model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from advlab.models import ImageClassifier

DIGIT_CLASSES = [str(i) for i in range(10)]


def digits_net() -> nn.Module:
    """The factory a user would write for `--model tests/conftest.py:digits_net`."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


@dataclass
class Digits:
    model: ImageClassifier
    x_test: torch.Tensor  # (N, 1, 8, 8) in [0, 1]
    y_test: torch.Tensor  # (N,)
    weights: Path  # state_dict file of the trained net

    def correct(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n test images the model classifies correctly."""
        with torch.no_grad():
            ok = self.model(self.x_test).argmax(1) == self.y_test
        return self.x_test[ok][:n], self.y_test[ok][:n]


def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, torch.tensor(d.target)


@pytest.fixture(scope="session")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Digits:
    x, y = digits_data()
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = digits_net()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(30):
        perm = torch.randperm(1400, generator=gen)
        for i in range(0, 1400, 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(net((x[idx] - 0.5) / 0.5), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    path = tmp_path_factory.mktemp("digits") / "digits.pt"
    torch.save(net.state_dict(), path)
    model = ImageClassifier(net.eval(), name="digits-cnn", weights=str(path), mean=(0.5,), std=(0.5,),
                            input_size=None, class_names=DIGIT_CLASSES, in_channels=1).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        acc = (model(x[1400:]).argmax(1) == y[1400:]).float().mean()
    assert acc > 0.9, f"digits CNN trained to only {acc:.2f}"
    return Digits(model, x[1400:], y[1400:], path)
