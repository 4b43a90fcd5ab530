"""Hugging Face transformers' image classifiers by Hub name or folder (`microsoft/resnet-50`, `hf:ORG/NAME`,
`hf:DIR`; advlab/zoo/hf_models.py), offline, on transformers' own loading code: a small ResNet the test builds
and saves with `save_pretrained` (random weights are fine for a loading test) gives, loaded by name, the
outputs of transformers' own model and image processor on real photos."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image

from advlab.cli.main import main
from advlab.core.errors import AdvlabError
from advlab.zoo.models import load_model

PHOTOS = sorted((Path(__import__("foolbox").__file__).parent / "data").glob("imagenet_*.jpg"))[:3]
LABELS = {0: "cat", 1: "dog", 2: "bird"}


def _reference(folder: Path) -> tuple[torch.nn.Module, object]:
    config = transformers.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                                       num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(0)
    model = transformers.ResNetForImageClassification(config).eval()
    processor = transformers.ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=0.875,
                                                    image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return model, processor


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module, object]:
    folder = tmp_path_factory.mktemp("hf") / "tiny-resnet"
    model, processor = _reference(folder)
    return folder, model, processor


def test_a_transformers_classifier_gives_transformers_own_outputs_on_real_photos(saved, tmp_path):
    folder, reference, processor = saved
    model = load_model(f"hf:{folder}", None)
    assert (model.input_size, model.class_names, model.named_classes) == (64, ["cat", "dog", "bird"], True)
    for photo in PHOTOS:
        image = Image.open(photo).convert("RGB")
        ours = model.image_transform(image)  # (3, 64, 64) in [0, 1]: the processor's resize and crop
        theirs = processor(images=image, return_tensors="pt")["pixel_values"]  # (1, 3, 64, 64), normalised
        with torch.no_grad():
            assert torch.allclose(model(ours[None]), reference(pixel_values=theirs).logits, atol=1e-5), photo.name
    assert main(["attack", "--method", "fgsm", "--model", f"hf:{folder}", "--data", "photos", "-n", "2",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    recorded = json.loads((tmp_path / "run" / "results.json").read_text())["model"]
    assert recorded["preprocessing"]["processor"] == "ConvNextImageProcessor"


def test_a_bare_hub_name_loads_through_the_hugging_face_cache(tmp_path):
    """`acme/tiny-resnet` and `hf:acme/tiny-resnet` offline: the Hub cache is filled in its layout (refs/main ->
    snapshots/<revision>/) and transformers' own loading code reads it."""
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--acme--tiny-resnet"
    reference, _ = _reference(repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    x = torch.rand(2, 3, 64, 64)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    with torch.no_grad():
        torch.save({"x": x, "logits": reference(pixel_values=(x - mean) / std).logits}, tmp_path / "ref.pt")
    script = f"""
import torch
from advlab.zoo.models import load_model
ref = torch.load({str(tmp_path / "ref.pt")!r}, weights_only=True)
for name in ("acme/tiny-resnet", "hf:acme/tiny-resnet"):
    model = load_model(name, None)
    with torch.no_grad():
        print(name, model.weights, torch.allclose(model(ref["x"]), ref["logits"], atol=1e-5))
"""
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split("\n")[:2] == ["acme/tiny-resnet pretrained True", "hf:acme/tiny-resnet pretrained True"]


def test_transformers_errors_are_one_line(tmp_path, monkeypatch):
    with pytest.raises(AdvlabError, match="transformers could not load it as an image classifier"):
        load_model(f"hf:{tmp_path}", None)  # a folder without a model
    with pytest.raises(AdvlabError, match="give DEFAULT"):
        load_model(f"hf:{tmp_path}", "weights.bin")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if transformers were not installed
    with pytest.raises(AdvlabError, match=r"pip install 'advlab\[transformers\]'"):
        load_model("microsoft/resnet-50", None)
