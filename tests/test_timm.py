"""Models from timm by name (`timm:NAME`, advlab/zoo/timm_models.py), offline, on timm's own loading code:
weights the test trains or creates and saves as safetensors, loaded by name, give timm's own outputs; image
files are decoded as timm's eval transform decodes them; a timm architecture trained on real Fashion-MNIST
reports through the command line the clean accuracy plain PyTorch measures."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

from advlab.cli.main import main
from advlab.core.errors import AdvlabError
from advlab.data.sources import load_images
from advlab.zoo.models import load_model

ARCH = "test_efficientnet"  # timm's own small EfficientNet (0.36 M parameters): pretrained_cfg 160 px, bicubic,
# ImageNet mean/std (in every timm 1.x since 1.0.9; its crop_pct is 0.875 there, 0.95 in 1.0.31)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@pytest.fixture(scope="module")
def trained_on_fashion(fashion, tmp_path_factory) -> tuple[Path, float, Path]:
    """timm's test_efficientnet trained by the user on 4,096 real Fashion-MNIST images (one pass, ~3 s) and saved as
    safetensors; its test accuracy on 500 held-out images measured in plain PyTorch; those images as a file."""
    torch.manual_seed(0)
    net = timm.create_model(ARCH, num_classes=10, in_chans=1)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    x, y = fashion.x_train[:4096], fashion.y_train[:4096]
    for i in range(0, len(x), 64):
        loss = torch.nn.functional.cross_entropy(net((x[i:i + 64] - 0.5) / 0.5), y[i:i + 64])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    root = tmp_path_factory.mktemp("timm")
    save_file(net.state_dict(), str(root / "fashion_resnet.safetensors"))
    xt, yt = fashion.x_test[:500], fashion.y_test[:500]
    with torch.no_grad():
        accuracy = float((net((xt - 0.5) / 0.5).argmax(1) == yt).float().mean())
    np.savez(root / "test.npz", x=(xt.numpy() * 255).round().astype(np.uint8), y=yt.numpy())
    return root / "fashion_resnet.safetensors", accuracy, root / "test.npz"


def test_a_timm_architecture_trained_by_the_user_reports_the_accuracy_plain_pytorch_measures(
        trained_on_fashion, tmp_path, one_thread):
    weights, accuracy, images = trained_on_fashion
    assert accuracy > 0.6  # it learned something: a test of loading, not of a constant
    assert main(["attack", "--method", "fgsm", "--eps", "0.05", "--model", f"timm:{ARCH}", "--weights", str(weights),
                 "--input-size", "28", "--mean", "0.5", "--std", "0.5", "--data", f"tensors:{images}", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["clean"]["accuracy"] == accuracy
    model = results["model"]
    assert (model["name"], model["num_classes"], model["in_channels"], model["mean"]) == (f"timm:{ARCH}", 10, 1, [0.5])
    cfg = resolve_data_config({}, model=timm.create_model(ARCH))  # its pretrained_cfg (crop_pct differs by version)
    assert model["preprocessing"] == {"source": "timm pretrained_cfg", "interpolation": cfg["interpolation"],
                                      "crop_pct": cfg["crop_pct"], "crop_mode": cfg["crop_mode"]}
    assert results["robustness"]["matrices"][0]["rows"][-1]["accuracy"][0] < accuracy  # FGSM at 0.05 bites


def test_timm_weights_by_name_give_timm_s_own_outputs_and_image_files_timm_s_own_transform(tmp_path, one_thread):
    """ImageNet-shaped: the architecture's pretrained_cfg (160 px, bicubic, its crop_pct, ImageNet mean/std) decides
    the decoding of real photos (foolbox's ImageNet samples) and the normalisation, exactly as timm's
    `resolve_data_config` + `create_transform` do."""
    torch.manual_seed(1)
    reference = timm.create_model(ARCH).eval()
    save_file(reference.state_dict(), str(tmp_path / "w.safetensors"))
    model = load_model(f"timm:{ARCH}", str(tmp_path / "w.safetensors"))
    assert model.input_size == 160 and model.num_classes == 1000 and model.class_names[1] == "goldfish"
    data = load_images("imagenet-samples", model, n=3)
    transform = create_transform(**resolve_data_config({}, model=reference))  # timm's own, normalisation included
    import foolbox

    folder = Path(foolbox.__file__).parent / "data"
    for name, ours in zip(data.names, data.images[:3]):
        theirs = transform(Image.open(folder / name).convert("RGB"))  # (3, 160, 160), normalised
        assert torch.equal((ours - MEAN) / STD, theirs), name
        with torch.no_grad():
            assert torch.equal(model(ours[None]), reference(theirs[None]))


def test_timm_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(AdvlabError, match="timm has no model 'resnet18.nope'"):
        load_model("timm:resnet18.nope", "none")
    with pytest.raises(AdvlabError, match="no such file"):
        load_model(f"timm:{ARCH}", str(tmp_path / "missing.safetensors"))
    save_file({"fc.weight": torch.zeros(10, 8)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(AdvlabError, match=f"do not fit timm:{ARCH}"):
        load_model(f"timm:{ARCH}", str(tmp_path / "other.safetensors"))
    monkeypatch.setitem(sys.modules, "timm", None)  # as if timm were not installed
    with pytest.raises(AdvlabError, match=r"pip install 'advlab\[timm\]'"):
        load_model(f"timm:{ARCH}", "none")


def test_hf_hub_and_pretrained_tags_load_through_the_hub_cache(tmp_path):
    """`hf-hub:timm/NAME` and `timm:NAME.TAG` with timm's pretrained weights, offline: the Hugging Face cache
    is filled in the hub's layout with timm's own `save_for_hf`, and timm's loading code reads it."""
    import os
    import subprocess

    from timm.models._hub import save_for_hf  # (exported from timm.models only since timm 1.0.10)

    torch.manual_seed(2)
    reference = timm.create_model(f"{ARCH}.r160_in1k").eval()
    repo = tmp_path / "hub" / f"models--timm--{ARCH}.r160_in1k"
    revision = "0" * 40
    save_for_hf(reference, repo / "snapshots" / revision, safe_serialization=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    x = torch.rand(2, 3, 160, 160)
    torch.save({"x": x, "logits": reference((x - MEAN) / STD).detach()}, tmp_path / "ref.pt")
    script = f"""
import torch
from advlab.zoo.models import load_model
ref = torch.load({str(tmp_path / "ref.pt")!r}, weights_only=True)
for name in ("hf-hub:timm/{ARCH}.r160_in1k", "timm:{ARCH}.r160_in1k", "{ARCH}.r160_in1k"):
    model = load_model(name, None)
    with torch.no_grad():
        print(name, model.weights, model.input_size, torch.equal(model(ref["x"]), ref["logits"]))
"""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split("\n")[:3] == [f"hf-hub:timm/{ARCH}.r160_in1k pretrained 160 True",
                                          f"timm:{ARCH}.r160_in1k pretrained 160 True",
                                          f"{ARCH}.r160_in1k pretrained 160 True"]  # a bare tagged name is timm's
