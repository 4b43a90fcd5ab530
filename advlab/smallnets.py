"""Small classifiers the lab trains itself on real data (Fashion-MNIST) for CPU experiments and tests.

    python -m advlab.smallnets --out fashion_cnn.pt        # about a minute on 2 CPU cores, ~90% test accuracy
    python -m advlab.smallnets --arch fashion_mlp --out fashion_mlp.pt
    advlab attack --method boundary --model advlab.smallnets:fashion_cnn --weights fashion_cnn.pt \\
        --data fashion-mnist --input-size 28 --mean 0.5 --std 0.5
"""
from __future__ import annotations

import argparse
from pathlib import Path

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


def train_classifier(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 3, batch_size: int = 128,
                     lr: float = 2e-3, seed: int = 0, mean: float = FASHION_MEAN, std: float = FASHION_STD) -> nn.Module:
    """Plain Adam training on (N, C, H, W) images in [0, 1]; returns the net in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):
        order = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(net((x[idx] - mean) / std), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def main() -> None:
    from advlab.data import load_images
    from advlab.models import ImageClassifier

    p = argparse.ArgumentParser(description="Train the lab's small Fashion-MNIST CNN and save its state_dict.")
    p.add_argument("--arch", choices=sorted(ARCHITECTURES), default="fashion_cnn")
    p.add_argument("--out", default="fashion_cnn.pt")
    p.add_argument("-n", type=int, default=60000, help="training images")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.manual_seed(args.seed)
    net = ARCHITECTURES[args.arch]()
    probe = ImageClassifier(net, name=args.arch, weights="training", mean=(FASHION_MEAN,), std=(FASHION_STD,),
                            input_size=28, class_names=[str(i) for i in range(10)], in_channels=1)
    train = load_images("fashion-mnist:train", probe, n=args.n)
    train_classifier(net, train.x, train.y, epochs=args.epochs, seed=args.seed)
    test = load_images("fashion-mnist:test", probe)
    with torch.no_grad():
        accuracy = (probe(test.x).argmax(1) == test.y).float().mean()
    torch.save(net.state_dict(), Path(args.out))
    print(f"test accuracy {accuracy:.4f}; saved {args.out}")


if __name__ == "__main__":
    main()
