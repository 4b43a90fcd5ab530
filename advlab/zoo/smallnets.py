"""Small classifiers the lab trains itself on real data (Fashion-MNIST) for CPU experiments and tests.

    python -m advlab.cli.lab_nets classifier --out fashion_cnn.pt        # about a minute on 2 CPU cores, ~90% test accuracy
    python -m advlab.cli.lab_nets classifier --arch fashion_mlp --out fashion_mlp.pt
    advlab attack --method boundary --model advlab.zoo.smallnets:fashion_cnn --weights fashion_cnn.pt \\
        --data fashion-mnist --input-size 28 --mean 0.5 --std 0.5
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

FASHION_MEAN, FASHION_STD = 0.5, 0.5


def fashion_cnn(num_classes: int = 10) -> nn.Module:
    """A small CNN for 1x28x28 inputs (two conv blocks, ~0.1M parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 14, 14)
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 64, 7, 7)
        nn.Flatten(), nn.Linear(64 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, num_classes),
    )


def fashion_mlp(num_classes: int = 10) -> nn.Module:
    """A two-hidden-layer perceptron for 1x28x28 inputs: a second architecture for transfer studies."""
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, num_classes))


ARCHITECTURES = {"fashion_cnn": fashion_cnn, "fashion_mlp": fashion_mlp}


Adversary = Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor]  # (images, labels, epoch) -> adversarials


def train_classifier(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 3, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, mean: float = FASHION_MEAN, std: float = FASHION_STD,
                     adversary: Adversary | None = None) -> nn.Module:
    """Adam training on (N, C, H, W) images in [0, 1]; returns the net in eval mode. With an `adversary`,
    adversarial training (Madry et al., ICLR 2018): each minibatch is replaced by what the adversary makes of
    it on the net as it is (in eval mode)."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for epoch in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            batch = x[idx]
            if adversary is not None:
                net.eval()
                batch = adversary(batch, y[idx], epoch)
                net.train()
            loss = nn.functional.cross_entropy(net((batch - mean) / std), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


