"""Model zoo: offline weight resolution with hash checks, the [0, 1] wrapper, bring-your-own errors."""
from __future__ import annotations

import sys

import pytest
import torch
import torchvision

from advlab.core.errors import AdvlabError
from advlab.zoo import models, torchvision_weights
from advlab.zoo.models import load_model
from advlab.zoo.torchvision_weights import ensure_weights_cached

MOBILENET = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1


def test_offline_package_fills_an_empty_hub_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = ensure_weights_cached(MOBILENET)
    assert cached == tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    model = load_model("mobilenet_v2", "IMAGENET1K_V1")
    assert model.num_classes == 1000 and model.input_size == 224 and model.class_names[0] == "tench"


def test_corrupt_offline_file_is_refused(monkeypatch, tmp_path):
    package = tmp_path / "site" / "fake_offline_weights"
    (package / "weights").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "weights" / "mobilenet_v2-b0353104.pth").write_bytes(b"tampered")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(torchvision_weights, "OFFLINE_WEIGHT_PACKAGES", ("fake_offline_weights",))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    with pytest.raises(AdvlabError, match="corrupt"):
        ensure_weights_cached(MOBILENET)
    assert not (tmp_path / "home" / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth").exists()


def test_wrapper_owns_bounds_resizing_and_normalisation():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
    model = models.ImageClassifier(net, name="t", weights="random", mean=(0.5, 0.4, 0.3), std=(0.2,),
                                   input_size=8, class_names=list("abcd"), in_channels=3)
    x = torch.rand(2, 3, 16, 16)
    resized = torch.nn.functional.interpolate(x, size=(8, 8), mode="bilinear", align_corners=False)
    expected = net((resized - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / 0.2)
    torch.testing.assert_close(model(x), expected)
    with pytest.raises(AdvlabError, match="2 values for a 3-channel"):
        models.ImageClassifier(net, name="t", weights="r", mean=(0.5, 0.5), std=(1,), input_size=8,
                               class_names=list("abcd"), in_channels=3)


def test_unknown_weights_name_lists_the_choices():
    with pytest.raises(AdvlabError, match="IMAGENET1K_V1"):
        load_model("mobilenet_v2", "IMAGENET9K")


def test_bring_your_own_errors(tmp_path):
    src = tmp_path / "mynet.py"
    src.write_text("import torch\n"
                   "def net(num_classes=10):\n"
                   "    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(),"
                   " torch.nn.Linear(144, num_classes))\n"
                   "def not_a_model():\n    return 3\n")
    with pytest.raises(AdvlabError, match="does not exist"):
        load_model(f"{tmp_path}/nope.py:net")
    with pytest.raises(AdvlabError, match="no callable 'missing'"):
        load_model(f"{src}:missing")
    with pytest.raises(AdvlabError, match="not a torch.nn.Module"):
        load_model(f"{src}:not_a_model")
    with pytest.raises(AdvlabError, match="cannot import module"):
        load_model("no_such_package_xyz.models:net")
    model = load_model(f"{src}:net", None, input_size=8, num_classes=5)
    assert model.num_classes == 5 and model.in_channels == 1
    weights = tmp_path / "w.pt"
    other = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 7))
    torch.save(other.state_dict(), weights)
    with pytest.raises(AdvlabError, match="do not fit the model"):
        load_model(f"{src}:net", str(weights), input_size=8, num_classes=5)
    model = load_model(f"{src}:net", str(weights), input_size=8, num_classes=7)
    assert model.num_classes == 7


def test_custom_module_path_form(tmp_path, monkeypatch):
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "nets.py").write_text(
        "import torch\ndef tiny():\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = load_model("mypkg.nets:tiny", None, input_size=4)
    assert model.num_classes == 3
    sys.modules.pop("mypkg.nets", None)
    sys.modules.pop("mypkg", None)


def test_the_lab_nets_come_by_name_with_their_data_conventions(tmp_path):
    """`--model fashion_segnet` is the same model as its factory path with the shipped weights, mean and
    std; the classifiers, which ship no weights, say how to make them; a wrong --task is one line."""
    from advlab.data.sources import load_images
    from advlab.zoo.segnet import MEAN, STD, WEIGHTS

    named = load_model("fashion_segnet")
    by_path = load_model("advlab.zoo.segnet:fashion_segnet", str(WEIGHTS), mean=[MEAN], std=[STD],
                         task="segmentation")
    x = load_images("fashion-scenes:test", named, n=4).x
    with torch.no_grad():
        assert torch.equal(named(x), by_path(x))
    assert named.name == "fashion_segnet" and named.class_names[0] == "background" and named.task == "segmentation"
    detector = load_model("fashion_detector")
    assert detector.task == "detection" and detector.num_classes == 11 and detector.class_names[1] == "T-shirt/top"
    with pytest.raises(AdvlabError, match=r"fashion_cnn ships no weights: train them with `python -m advlab.cli."
                                          r"lab_nets classifier --arch fashion_cnn --out FILE`"):
        load_model("fashion_cnn")
    cnn = load_model("fashion_cnn", "none")
    assert (cnn.input_size, cnn.in_channels, cnn.class_names[9]) == (28, 1, "Ankle boot")
    with pytest.raises(AdvlabError, match="fashion_segnet is a segmentation model, not a detection model"):
        load_model("fashion_segnet", task="detection")
