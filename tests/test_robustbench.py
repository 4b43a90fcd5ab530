"""RobustBench's zoo by name (`robustbench:NAME`, advlab/zoo/robustbench_models.py) and the benchmark test sets
(`cifar10:DIR`, `robustbench-imagenet:DIR`, advlab/data/benchmarks.py), offline, on robustbench's and
torchvision's own loading code.

RobustBench's checkpoints come from Google Drive, which this machine cannot reach: the tests fill a model_dir
in robustbench's layout (MODEL_DIR/cifar10/Linf/Wong2020Fast.pt) with random weights of the architecture its
zoo names, and check that advlab's model gives robustbench's outputs, inherits the leaderboard's threat model,
and carries the published figures. The CIFAR-10 images are 20 real CIFAR-10 test images (foolbox ships them),
written in torchvision's CIFAR layout; as they are not the published archive, torchvision's md5 check is
bypassed in the one test that reads them."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.cli.main import main
from advlab.core.errors import AdvlabError
from advlab.zoo import robustbench_models
from advlab.zoo.models import load_model

NAME = "Wong2020Fast"  # CIFAR-10 l_inf: PreActResNet-18 (11 M parameters); published 83.34 / 43.21
FOOLBOX_DATA = Path(__import__("foolbox").__file__).parent / "data"


L2_NAME = "Rebuffi2021Fixing_R18_cutmix_ddpm"  # CIFAR-10 l2 only: a pre-activation ResNet-18; 90.33 / 75.86


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model_dir in robustbench's layout holding random weights of the architectures its zoo names for
    Wong2020Fast (l_inf) and Rebuffi2021Fixing_R18_cutmix_ddpm (l2), saved as DataParallel checkpoints
    (robustbench strips the `module.` prefix itself)."""
    modules = robustbench_models._robustbench()
    root = tmp_path_factory.mktemp("robustbench")
    for name, threat in ((NAME, "Linf"), (L2_NAME, "L2")):
        zoo = robustbench_models._zoo()[modules.BenchmarkDataset("cifar10")][modules.ThreatModel(threat)]
        torch.manual_seed(0)
        net = zoo[name]["model"]()
        (root / "cifar10" / threat).mkdir(parents=True)
        torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}},
                   root / "cifar10" / threat / f"{name}.pt")
    return root


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """foolbox's 20 real CIFAR-10 test images (label in the file name) as torchvision's cifar-10-batches-py."""
    files = sorted(FOOLBOX_DATA.glob("cifar10_*.png"))
    x = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])  # (20, 32, 32, 3) uint8
    labels = [int(f.stem.split("_")[-1]) for f in files]
    root = tmp_path_factory.mktemp("cifar")
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    with (folder / "test_batch").open("wb") as f:
        pickle.dump({"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), "labels": labels}, f)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": names}, f)
    return root


@pytest.fixture()
def unchecked_cifar(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision's md5 check of the CIFAR files off (the files are real images, not the published archive)."""
    monkeypatch.setattr("torchvision.datasets.cifar.check_integrity", lambda *args, **kwargs: True)


def test_a_robustbench_model_by_name_gives_robustbench_s_own_outputs(model_dir, cifar_dir, unchecked_cifar):
    modules = robustbench_models._robustbench()
    theirs = modules.load_model(NAME, model_dir=str(model_dir), dataset="cifar10", threat_model="Linf")
    ours = load_model(f"robustbench:{NAME}", str(model_dir), dataset="cifar10")
    from advlab.data.sources import load_images

    data = load_images(f"cifar10:{cifar_dir}", ours)
    assert data.names[0] == "cifar10-test[0]" and data.class_names[3] == "cat" and len(data) == 20
    with torch.no_grad():
        assert torch.equal(ours(data.x), theirs(data.x))  # no normalisation added: robustbench's models have theirs
    assert ours.published == {"source": "RobustBench leaderboard (robustbench 1.1.1)", "dataset": "cifar10",
                              "threat_model": {"norm": "linf", "eps": 8 / 255, "label": "linf eps 0.03137 (8/255)"},
                              "clean_accuracy": 0.8334, "robust_accuracy": 0.4321, "attack": "AutoAttack"}


def test_a_run_of_a_robustbench_model_is_evaluated_in_its_leaderboard_threat_model(model_dir, cifar_dir,
                                                                                    unchecked_cifar, tmp_path):
    """An l2 entry, no --threat and no --eps: the matrix is l2 0.5 and PGD attacks in l2 within 0.5 (where its
    defaults are l_inf 8/255); config.yaml records it, so --resume does the same; the page and the terminal
    show the published figures beside the lab's."""
    out = tmp_path / "run"
    assert main(["attack", "--method", "pgd", "--model", f"robustbench:{L2_NAME}", "--weights", str(model_dir),
                 "--data", f"cifar10:{cifar_dir}", "-n", "4", "--set", "steps=2", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [m["threat"]["label"] for m in results["robustness"]["matrices"]] == ["l2 eps 0.5"]
    assert (results["attacks"][0]["params"]["norm"], results["attacks"][0]["params"]["eps"]) == ("l2", 0.5)
    assert results["model"]["published"]["robust_accuracy"] == 0.7586
    assert "clean 90.33%, AutoAttack 75.86%" in (out / "index.html").read_text()
    from advlab.core.config_yaml import load_config

    saved = load_config(out / "config.yaml")
    assert [t.label() for t in saved.threat] == ["l2 eps 0.5"] and saved.attacks[0].params["norm"] == "l2"
    import advlab

    assert advlab.load(out).published["clean_accuracy"] == 0.9033  # the same from Python


def test_a_download_that_is_not_a_model_file_is_one_line_naming_it(tmp_path, run_error):
    folder = tmp_path / "cifar10" / "Linf"
    folder.mkdir(parents=True)
    checkpoint = folder / f"{NAME}.pt"
    checkpoint.write_text("<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>")
    args = ["attack", "--method", "fgsm", "--model", f"robustbench:{NAME}", "--dataset", "cifar10", "--weights",
            str(tmp_path), "--data", "imagenet-samples", "--out", str(tmp_path / "run")]
    line = run_error(*args)
    assert f"{checkpoint} is an HTML page, not a model file" in line and "drive.google.com/uc?id=" in line
    torch.save({"w": torch.zeros(1000)}, checkpoint)
    checkpoint.write_bytes(checkpoint.read_bytes()[:300])  # a truncated download
    line = run_error(*args)
    assert f"{checkpoint} is not a readable model file" in line and "truncated download?" in line
    assert not (tmp_path / "run").exists()  # nothing written before the model loads


def test_robustbench_names_and_datasets_are_one_line(monkeypatch):
    with pytest.raises(AdvlabError, match="in RobustBench's cifar10 and imagenet zoos; pass --dataset cifar10 or "
                                          "imagenet"):
        load_model(f"robustbench:{NAME}", "none")
    with pytest.raises(AdvlabError, match="no model 'Carmon2019Unlabelled'; did you mean Carmon2019Unlabeled"):
        load_model("robustbench:Carmon2019Unlabelled", "none")
    with pytest.raises(AdvlabError, match="model_dir"):
        load_model(f"robustbench:{NAME}", "/nonexistent/dir", dataset="cifar10")
    entry = robustbench_models.entry("robustbench:Standard", "cifar10", "l2")  # under Linf, L2 and corruptions
    assert (entry.threat_model, entry.threat.eps, entry.clean_accuracy) == ("L2", 0.5, 0.9478)
    assert robustbench_models.entry("robustbench:Standard_R50").threat.eps == 4 / 255  # ImageNet's leaderboard
    robustbench_models._robustbench.cache_clear()
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "robustbench" else object())
    try:
        with pytest.raises(AdvlabError, match=r"pip install 'advlab\[robustbench\]' && pip install --no-deps"):
            robustbench_models._robustbench()
    finally:
        monkeypatch.undo()
        robustbench_models._robustbench.cache_clear()


def test_cifar_without_its_files_offline_says_where_to_get_them(tmp_path, run_error, monkeypatch):
    def no_network(*args: object, **kwargs: object) -> None:
        raise OSError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", no_network)
    line = run_error("attack", "--method", "fgsm", "--model", "resnet18", "--weights", "none", "--num-classes",
                     "10", "--data", f"cifar10:{tmp_path}", "--out", str(tmp_path / "run"))
    assert f"no CIFAR10 in {tmp_path}, and downloading it failed" in line
    assert "cifar-10-python.tar.gz" in line


def test_robustbench_s_imagenet_subset_is_read_in_its_order_with_its_labels(tmp_path):
    """The loader reads the files robustbench lists, in its order, labelled by their WordNet folder. (The two
    image files are foolbox's ImageNet photos under the listed names: a test of which files are read and how
    they are labelled, not of a model's accuracy on them.)"""
    from advlab.data.benchmarks import _robustbench_helper_files
    from advlab.data.sources import load_images

    listed = (_robustbench_helper_files() / "imagenet_test_image_ids.txt").read_text().split()[:2]
    photos = sorted(FOOLBOX_DATA.glob("imagenet_*.jpg"))[:2]
    for rel, photo in zip(listed, photos):
        (tmp_path / "val" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "val" / rel).write_bytes(photo.read_bytes())
    model = load_model("resnet18", "none")
    data = load_images(f"robustbench-imagenet:{tmp_path}", model, n=2)
    wnids = (Path(__import__("advlab").__file__).parent / "data" / "imagenet_wnids.txt").read_text().split()
    assert data.names == listed
    assert data.y.tolist() == [wnids.index(rel.split("/")[0]) for rel in listed]
    with pytest.raises(AdvlabError, match=r"1 of the 3 images of RobustBench's ImageNet subset are not in"):
        load_images(f"robustbench-imagenet:{tmp_path}", model, n=3)
