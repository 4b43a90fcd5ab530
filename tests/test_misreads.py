"""Silent misreads (issue 22, section 2): what the lab cannot read faithfully is refused with one line,
and what it changes on the user's behalf is said once and recorded in results.json."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.cli.main import main
from advlab.core.errors import AdvlabError
from advlab.data.sources import load_images
from advlab.zoo.models import load_model


def fashion_model_args(fashion) -> list[str]:
    return ["--model", "advlab.zoo.smallnets:fashion_cnn", "--weights", str(fashion.weights), "--mean", "0.5", "--std",
            "0.5", "--input-size", "28"]


def test_a_16_bit_png_is_read_as_its_values_not_as_white(fashion, tmp_path):
    wide = (np.arange(28 * 28).reshape(28, 28) * 83).astype(np.uint16)  # 0 .. 65,000: a ramp over 16 bits
    (tmp_path / "set" / "0").mkdir(parents=True)
    Image.fromarray(wide).save(tmp_path / "set" / "0" / "ramp.png")
    assert Image.open(tmp_path / "set" / "0" / "ramp.png").mode == "I;16"
    x = load_images(f"folder:{tmp_path / 'set'}", fashion.model).x  # (1, 1, 28, 28)
    expected = torch.from_numpy(wide.astype(np.float64) / 65535).float()
    assert (x[0, 0] - expected).abs().max() <= 1 / 255 + 1e-6  # 8 bits of the 16, not clipped to white
    float_image = tmp_path / "float" / "0"
    float_image.mkdir(parents=True)
    Image.fromarray(np.ones((28, 28), np.float32)).save(float_image / "f.tif")
    with pytest.raises(AdvlabError, match="holds 32-bit floats"):
        _ = load_images(f"folder:{tmp_path / 'float'}", fashion.model).x


def test_one_image_of_shape_3_h_w_is_refused_as_ambiguous(fashion, tmp_path, run_error):
    path = tmp_path / "one.npz"
    np.savez(path, x=np.zeros((3, 28, 28), np.uint8))
    message = run_error("attack", "--method", "fgsm", *fashion_model_args(fashion), "--data", f"tensors:{path}")
    assert "one RGB image or three grayscale ones" in message and "(1, 3, 28, 28)" in message
    np.savez(path, x=np.zeros((5, 28, 28), np.uint8), y=np.zeros(5, np.int64))  # a grayscale stack stays one
    assert load_images(f"tensors:{path}", fashion.model).x.shape == (5, 1, 28, 28)


def test_a_yaml_key_given_twice_is_refused(tmp_path, run_error):
    config = tmp_path / "twice.yaml"
    config.write_text("name: twice\ndata:\n  source: imagenet-samples\n  n: 2\n  n: 1000\nattacks: [{method: fgsm}]\n")
    message = run_error("run", str(config))
    assert "key 'n' is given twice (lines 4 and 5)" in message


def test_class_names_are_checked_and_used_for_torchvision_models(tmp_path, run_error):
    few = tmp_path / "few.txt"
    few.write_text("cat\ndog\nbird\n")
    assert "has 3 names but mobilenet_v2 has 1000 classes" in run_error(
        "attack", "--method", "fgsm", "--class-names", str(few), "-n", "1")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"thing {i}\n" for i in range(1000)))
    model = load_model("mobilenet_v2", "IMAGENET1K_V1", class_names_file=str(names))
    assert model.class_names[0] == "thing 0" and model.class_names[999] == "thing 999"


def test_a_swapped_default_model_is_said_and_recorded(tmp_path, capsys):
    out = tmp_path / "dag"
    assert main(["attack", "--method", "dag", "-n", "2", "--set", "max_iterations=3", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "does not attack classification models, so the model is the lab's segmentation model" in err
    notes = json.loads((out / "results.json").read_text())["notes"]
    assert len(notes) == 1 and "model fashion_segnet on fashion-scenes:test" in notes[0]
    asked = tmp_path / "asked"
    assert main(["attack", "--method", "dag", "--task", "segmentation", "-n", "2", "--set", "max_iterations=3",
                 "--out", str(asked)]) == 0
    assert "notes" not in json.loads((asked / "results.json").read_text())  # asked for: nothing to say


def test_an_image_enlarged_more_than_4x_is_said_and_recorded(fashion, tmp_path, capsys):
    (tmp_path / "set" / "0").mkdir(parents=True)
    Image.fromarray(np.full((1, 1), 128, np.uint8)).save(tmp_path / "set" / "0" / "dot.png")
    Image.fromarray(np.full((28, 28), 128, np.uint8)).save(tmp_path / "set" / "0" / "full.png")
    out = tmp_path / "run"
    assert main(["attack", "--method", "fgsm", *fashion_model_args(fashion), "--data", f"folder:{tmp_path / 'set'}",
                 "--out", str(out)]) == 0
    expected = "1 of 2 images of folder:"
    assert expected in capsys.readouterr().err
    notes = json.loads((out / "results.json").read_text())["notes"]
    assert len(notes) == 1 and expected in notes[0] and "dot.png, is 1x1" in notes[0] and "more than 4x" in notes[0]


def test_grayscale_repeated_into_three_channels_is_said(tmp_path, caplog):
    """Issue 22, section 2: a channel replication made on the user's behalf is a note (logged once and
    recorded in results.json with the run's other notes), for tensors and for image files."""
    model = load_model("mobilenet_v2", "none")  # 3 channels, 224 px
    torch.save({"x": torch.rand(2, 1, 224, 224)}, tmp_path / "gray.pt")
    assert load_images(f"tensors:{tmp_path / 'gray.pt'}", model).notes == [
        f"the 1-channel images of tensors:{tmp_path / 'gray.pt'} are repeated into the model's 3 channels"]
    (tmp_path / "set" / "0").mkdir(parents=True)
    Image.fromarray(np.full((256, 256), 128, np.uint8)).save(tmp_path / "set" / "0" / "gray.png")
    Image.fromarray(np.full((256, 256, 3), 128, np.uint8)).save(tmp_path / "set" / "0" / "rgb.png")
    notes = load_images(f"folder:{tmp_path / 'set'}", model).notes
    assert notes == [f"1 of 2 images of folder:{tmp_path / 'set'} are grayscale (e.g. gray.png) and are repeated "
                     "into the model's 3 channels"]
    assert "grayscale" in caplog.text
    rgb = tmp_path / "rgb.pt"
    torch.save({"x": torch.rand(2, 3, 224, 224)}, rgb)
    assert load_images(f"tensors:{rgb}", model).notes == []
