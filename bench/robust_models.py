"""The Fashion-MNIST CNN pair the robust-accuracy benchmarks use: `advlab.zoo.smallnets:fashion_cnn` trained
plainly, and a copy trained adversarially (Madry et al., ICLR 2018: each minibatch replaced by its l_inf
PGD examples), where weak attacks overestimate robustness. Trained on CPU in minutes and cached in
reports/models/ (`fashion_cnn_plain.pt`, `fashion_cnn_madry.pt`)."""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from advlab.attacks.gradient import pgd_linf
from advlab.data.fashion import FASHION_CLASSES
from advlab.zoo.smallnets import FASHION_MEAN, FASHION_STD, fashion_cnn, train_classifier
from advlab.zoo.wrappers import ImageClassifier

MODELS = Path("reports/models")


def wrap(net: nn.Module, weights: Path) -> ImageClassifier:
    model = ImageClassifier(net, name="advlab.zoo.smallnets:fashion_cnn", weights=str(weights), mean=(FASHION_MEAN,),
                            std=(FASHION_STD,), input_size=28, class_names=FASHION_CLASSES, in_channels=1).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def train_madry(net: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, epochs: int,
                batch_size: int = 128, lr: float = 2e-3, seed: int = 0) -> nn.Module:
    """Adversarial training: Adam on the PGD (l_inf eps, `steps` steps, step 2.5 eps / steps) examples of
    each minibatch, made on the net as it is."""
    wrapped = ImageClassifier(net, name="training", weights="training", mean=(FASHION_MEAN,), std=(FASHION_STD,),
                              input_size=28, class_names=FASHION_CLASSES, in_channels=1)

    def adversary(batch: torch.Tensor, labels: torch.Tensor, epoch: int) -> torch.Tensor:
        return pgd_linf(wrapped, batch, labels, eps, steps, 2.5 * eps / steps, seed=seed + epoch)

    return train_classifier(net, x, y, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, adversary=adversary)


def fashion_pair(n: int = 20000, eps: float = 0.1) -> tuple[ImageClassifier, ImageClassifier]:
    """(plain, adversarially trained at l_inf eps) Fashion-MNIST CNNs, trained once and cached."""
    from advlab.data.sources import load_images

    MODELS.mkdir(parents=True, exist_ok=True)
    plain_file, madry_file = MODELS / "fashion_cnn_plain.pt", MODELS / "fashion_cnn_madry.pt"
    if not plain_file.is_file() or not madry_file.is_file():
        probe = wrap(fashion_cnn(), plain_file)
        train = load_images("fashion-mnist:train", probe, n=n)
        torch.manual_seed(0)
        start = time.perf_counter()
        plain = train_classifier(fashion_cnn(), train.x, train.y, epochs=2, seed=0)
        torch.save(plain.state_dict(), plain_file)
        print(f"plain CNN trained in {time.perf_counter() - start:.0f} s")
        torch.manual_seed(0)
        start = time.perf_counter()
        madry = train_madry(fashion_cnn(), train.x, train.y, eps=eps, steps=5, epochs=2)
        torch.save(madry.state_dict(), madry_file)
        print(f"adversarially trained CNN (l_inf {eps}, PGD-5) trained in {time.perf_counter() - start:.0f} s")
    out = []
    for file in (plain_file, madry_file):
        net = fashion_cnn()
        net.load_state_dict(torch.load(file, weights_only=True))
        out.append(wrap(net, file))
    return out[0], out[1]
