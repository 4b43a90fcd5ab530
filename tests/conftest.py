"""Shared fixtures: a small CNN trained on real handwritten digits (scikit-learn's copy of the UCI
8x8 digits, 1,797 images) in a few seconds on CPU, wrapped like any advlab model; and the lab's own
Fashion-MNIST CNN (`advlab.zoo.smallnets:fashion_cnn`) trained on real Fashion-MNIST in 12-15 s."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from advlab.zoo.wrappers import ImageClassifier

DIGIT_CLASSES = [str(i) for i in range(10)]


def digits_net() -> nn.Module:
    """The factory a user would write for `--model tests/conftest.py:digits_net`."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10),
    )


class Counted(nn.Module):
    """The model under test, counting its forward calls and the images it is asked about."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls, self.images = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        return self.model(x)


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


# ---------------------------------------------------------------- Fashion-MNIST
FASHION_TRAIN_N = 20000  # one epoch on these: 11-12 s on 2 CPU cores, 0.84 test accuracy


@dataclass
class Fashion:
    model: ImageClassifier  # advlab.zoo.smallnets:fashion_cnn, frozen, eval mode, mean/std 0.5, input size 28
    x_train: torch.Tensor  # (20000, 1, 28, 28) in [0, 1]: the images the model was trained on
    y_train: torch.Tensor  # (20000,)
    x_test: torch.Tensor  # (10000, 1, 28, 28) in [0, 1]: the whole test split
    y_test: torch.Tensor  # (10000,)
    weights: Path  # its state_dict, for `--model advlab.zoo.smallnets:fashion_cnn --weights FILE`
    accuracy: float  # on the first 2,000 test images

    def correct(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n test images the model classifies correctly."""
        xs, ys, found = [], [], 0
        with torch.no_grad():
            for x, y in zip(self.x_test.split(500), self.y_test.split(500)):
                ok = self.model(x).argmax(1) == y
                xs.append(x[ok])
                ys.append(y[ok])
                found += int(ok.sum())
                if found >= n:
                    break
        return torch.cat(xs)[:n], torch.cat(ys)[:n]


@pytest.fixture(scope="session")
def fashion(tmp_path_factory: pytest.TempPathFactory) -> Fashion:
    """`advlab.zoo.smallnets.fashion_cnn` trained for one epoch on the first 20,000 Fashion-MNIST training
    images. Where Fashion-MNIST is neither installed nor downloadable the tests fail with the data
    loader's message (how to install it): a skip would hide the HGD checks."""
    from advlab.data.fashion import FASHION_CLASSES
    from advlab.data.sources import load_images
    from advlab.zoo.smallnets import FASHION_MEAN, FASHION_STD, fashion_cnn, train_classifier

    torch.manual_seed(0)
    net = fashion_cnn()
    path = tmp_path_factory.mktemp("fashion") / "fashion_cnn.pt"
    model = ImageClassifier(net, name="advlab.zoo.smallnets:fashion_cnn", weights=str(path), mean=(FASHION_MEAN,),
                            std=(FASHION_STD,), input_size=28, class_names=FASHION_CLASSES, in_channels=1)
    train = load_images("fashion-mnist:train", model, n=FASHION_TRAIN_N)
    test = load_images("fashion-mnist:test", model)
    train_classifier(net, train.x, train.y, epochs=1, seed=0)
    torch.save(net.state_dict(), path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        acc = float(torch.cat([model(x).argmax(1) == y for x, y in zip(test.x[:2000].split(500),
                                                                      test.y[:2000].split(500))]).float().mean())
    assert acc > 0.8, f"the Fashion-MNIST CNN trained to only {acc:.3f}"
    return Fashion(model, train.x, train.y, test.x, test.y, path, acc)


MADRY_TRAIN_N, MADRY_EPS = 5000, 0.1  # adversarial fine-tuning of `fashion` on these (PGD-3): ~15 s on 2 CPU cores


@pytest.fixture(scope="session")
def fashion_madry(fashion: Fashion, tmp_path_factory: pytest.TempPathFactory) -> Fashion:
    """`fashion`'s CNN fine-tuned adversarially (Madry et al., ICLR 2018: each minibatch replaced by its
    l_inf PGD-3 examples at eps 0.1) for one epoch on 5,000 training images: a model whose robustness weak
    attacks overstate."""
    import copy

    from advlab.attacks.gradient import pgd_linf
    from advlab.zoo.smallnets import train_classifier

    model = copy.deepcopy(fashion.model)
    for p in model.parameters():
        p.requires_grad_(True)

    def adversary(x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        return pgd_linf(model, x, y, MADRY_EPS, 3, 2.5 * MADRY_EPS / 3, seed=epoch)

    train_classifier(model.net, fashion.x_train[:MADRY_TRAIN_N], fashion.y_train[:MADRY_TRAIN_N], epochs=1, seed=0,
                     adversary=adversary)
    path = tmp_path_factory.mktemp("fashion-madry") / "fashion_cnn_madry.pt"
    torch.save(model.net.state_dict(), path)
    model.weights = str(path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        acc = float((model(fashion.x_test[:2000]).argmax(1) == fashion.y_test[:2000]).float().mean())
    return Fashion(model, fashion.x_train, fashion.y_train, fashion.x_test, fashion.y_test, path, acc)


# ---------------------------------------------------------------- threads
@pytest.fixture()
def one_thread() -> Iterator[None]:
    """One intra-op thread in this process for the test, as torchrun gives each rank (OMP_NUM_THREADS=1):
    float reductions split over another number of threads round differently, so results compared
    bit for bit with a sharded run's must come from the same thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- command line
@pytest.fixture()
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in the test's own directory: runs without --out (error paths too) land under it."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture()
def run_error(capsys: pytest.CaptureFixture[str]) -> Callable[..., str]:
    """`run_error(*argv)`: runs the CLI, asserts exit status 2 with one line and no traceback, returns it."""
    from advlab.cli.main import main

    def run(*args: str) -> str:
        code = main(list(args))
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        return err

    return run


# ---------------------------------------------------------------- segmentation
@dataclass
class Segmenter:
    model: ImageClassifier  # advlab.zoo.segnet:fashion_segnet with its shipped weights (an ImageSegmenter)
    x: torch.Tensor  # (N, 3, 48, 48) fashion-scenes test canvases in [0, 1]
    masks: torch.Tensor  # (N, 48, 48) their ground truth, 0 = background


@pytest.fixture(scope="session")
def segmenter() -> Segmenter:
    """The lab's fashion-scenes segmenter (weights shipped in advlab/zoo/weights) on 64 test scenes."""
    from advlab.data.sources import load_images
    from advlab.zoo.models import load_model
    from advlab.zoo.segnet import MEAN, STD, WEIGHTS

    model = load_model("advlab.zoo.segnet:fashion_segnet", str(WEIGHTS), mean=[MEAN], std=[STD], task="segmentation")
    data = load_images("fashion-scenes:test", model, n=64)
    return Segmenter(model, data.x, data.y)


# ---------------------------------------------------------------- a robustness matrix run
@pytest.fixture(scope="session")
def matrix_run(fashion: Fashion, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The Fashion-MNIST CNN (80 images) against FGSM, a PGD eps sweep and the Boundary Attack, behind
    bit-depth reduction attacked with BPDA and without it: (run directory, results.json)."""
    import json

    import yaml

    from advlab.cli.main import main

    root = tmp_path_factory.mktemp("matrix")
    config = {
        "name": "matrix", "seed": 0, "batch_size": 100,
        "model": {"name": "advlab.zoo.smallnets:fashion_cnn", "weights": str(fashion.weights), "mean": [0.5],
                  "std": [0.5], "input_size": 28},
        "data": {"source": "fashion-mnist:test", "n": 80},
        "attacks": [{"method": "fgsm", "eps": 0.1}, {"method": "pgd", "eps": [0.03, 0.1, 0.3], "steps": 5},
                    {"method": "boundary", "max_queries": 150}],
        "defenses": [{"method": "bit-depth", "bits": 2}, {"method": "bit-depth", "bits": 2, "bpda": False}],
    }
    path = root / "matrix.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["run", str(path), "--out", str(root / "run")]) == 0
    return root / "run", json.loads((root / "run" / "results.json").read_text())
