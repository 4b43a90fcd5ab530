"""`fashion_attribute_net`: a two-layer MLP that predicts the four attributes of a Fashion-MNIST
image (one logit each), wrapped like every advlab model; `python -m advlab_toy.model OUT.pt`
trains it on real Fashion-MNIST training images (a few seconds on a CPU)."""
from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from advlab.zoo.models import model_source
from advlab.zoo.wrappers import ImageClassifier
from advlab_toy.data import ATTRIBUTES

NAME = "fashion_attribute_net"
MEAN, STD = (0.286,), (0.353,)


class AttributeModel(ImageClassifier):
    """[0, 1] images (N, 1, 28, 28) -> attribute logits (N, 4)."""

    task = "attributes"


def attribute_net() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, len(ATTRIBUTES)))


def wrapped(net: nn.Module, weights: str) -> AttributeModel:
    return AttributeModel(net, name=NAME, weights=weights, mean=MEAN, std=STD, input_size=28,
                          class_names=ATTRIBUTES, in_channels=1)


@model_source("attribute-net", claims=lambda name: name == NAME, task="attributes",
              usage=f"{NAME} with --weights FILE (python -m advlab_toy.model FILE trains one)")
def load(name: str, weights: str | None, **options: Any) -> AttributeModel:
    """The attribute MLP with weights from FILE."""
    net = attribute_net()
    net.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True))
    return wrapped(net, str(weights)).eval()


def train(out: str, *, images: int = 6000, epochs: int = 3, seed: int = 0) -> None:
    """Binary cross-entropy over the attributes, Adam, on the first `images` training images."""
    from advlab_toy.data import attribute_set

    torch.manual_seed(seed)
    net = attribute_net()
    model = wrapped(net, "training")
    data = attribute_set("fashion-attributes:train", "train", model, images)
    x, y = data.x, data.y.float()  # (M, 1, 28, 28), (M, 4)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(100):
            loss = nn.functional.binary_cross_entropy_with_logits(model(x[i]), y[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(net.state_dict(), out)


if __name__ == "__main__":
    train(sys.argv[1])
