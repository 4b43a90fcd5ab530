"""Streaming: images read on demand (advlab.core.images) give what the same images held in memory give,
from the source through the attack, the row's numbers and the saved adversarials."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.cli.main import main
from advlab.core.criteria import Untargeted
from advlab.core.images import ChunkImages, FileImages, Replaced, StoredImages, TensorImages
from advlab.core.norms import MEASURES
from advlab.core.registry import get_attack
from advlab.data.sources import load_images
from advlab.zoo.models import load_model


def test_replaced_images_read_and_stream_like_an_assigned_copy() -> None:
    gen = torch.Generator().manual_seed(0)
    base, new = torch.rand(9, 1, 4, 4, generator=gen), torch.rand(4, 1, 4, 4, generator=gen)
    index = torch.tensor([7, 1, 4, 5])
    expected = base.clone()
    expected[index] = new
    replaced = Replaced(TensorImages(base), index, TensorImages(new))
    assert torch.equal(replaced.tensor(), expected) and torch.equal(torch.cat(list(replaced.batches(4))), expected)
    assert torch.equal(replaced[torch.tensor([5, 0, 7])], expected[[5, 0, 7]]) and torch.equal(replaced[2:6], expected[2:6])
    assert torch.equal(base, base.clone()) and not torch.equal(replaced.tensor(), base)  # the base is untouched


def test_chunk_images_read_across_chunk_files(tmp_path: Path) -> None:
    x = torch.rand(7, 3, 2, 2)
    files = []
    for k, part in enumerate(x.split([3, 3, 1])):
        files.append(tmp_path / f"chunk-{k}.pt")
        torch.save({"x_adv": part.clone(), "success": torch.ones(len(part), dtype=torch.bool)}, files[-1])
    chunks = ChunkImages(files, [3, 3, 1], (3, 2, 2))
    assert len(chunks) == 7 and torch.equal(chunks.tensor(), x)
    pick = torch.tensor([6, 0, 3, 2, 5])
    assert torch.equal(chunks[pick], x[pick]) and torch.equal(torch.cat(list(chunks.batches(2))), x)


def test_a_pt_tensor_file_is_memory_mapped_and_converted_per_read(tmp_path: Path) -> None:
    from torch import nn

    from advlab.data.fashion import FASHION_CLASSES
    from advlab.zoo.wrappers import ImageClassifier

    u8 = torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8)
    torch.save({"x": u8, "y": torch.arange(5)}, tmp_path / "x.pt")
    rgb = ImageClassifier(nn.Sequential(nn.Flatten(), nn.Linear(192, 10)), name="rgb", weights="random", mean=(0.5,),
                          std=(0.5,), input_size=8, class_names=FASHION_CLASSES, in_channels=3)
    s = load_images(f"tensors:{tmp_path / 'x.pt'}", rgb)
    assert isinstance(s.images, StoredImages)  # nothing converted yet
    expected = u8.float().div(255).expand(-1, 3, -1, -1)  # grayscale repeated for an RGB model
    assert torch.equal(s.x, expected) and torch.equal(s.images[torch.tensor([4, 1])], expected[[4, 1]])


def _image_folder(root: Path, x: torch.Tensor, y: torch.Tensor) -> Path:
    """Grayscale PNG files root/<label>/<i>.png (lossless: they decode to x exactly)."""
    for i, (image, label) in enumerate(zip(x, y.tolist())):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image[0] * 255).round().byte().numpy()).save(root / str(label) / f"{i:02d}.png")
    return root


def _bounded_reads(monkeypatch: pytest.MonkeyPatch, most: int) -> list[int]:
    """Record every image file read (its position), and fail any read of more than `most` images: the run
    never holds the data set whole. The constant-size slices (distances, image hashes, report images,
    --save-adversarials shards) are set to `most` too."""
    import advlab.run.chunks
    import advlab.run.rows

    for module, name in ((advlab.run.chunks, "DISTANCE_BATCH"), (advlab.run.chunks, "KEYS_BATCH"),
                         (advlab.run.rows, "REPORT_IMAGES"), (advlab.run.rows, "ADVERSARIAL_SHARD")):
        monkeypatch.setattr(module, name, most)
    reads: list[int] = []
    read, groups = FileImages.read, FileImages.groups

    def bounded_read(self: FileImages, index: torch.Tensor) -> torch.Tensor:
        reads.extend(index.tolist())
        assert len(index) <= most, f"{len(index)} image files read at once"
        return read(self, index)

    def bounded_groups(self: FileImages, parts, *, pin: bool = False):
        reads.extend(i for g in parts for i in g.tolist())
        assert all(len(g) <= most for g in parts), f"a batch of {max(len(g) for g in parts)} image files"
        return groups(self, parts, pin=pin)

    monkeypatch.setattr(FileImages, "read", bounded_read)
    monkeypatch.setattr(FileImages, "groups", bounded_groups)
    return reads


def _fashion_model(weights: Path) -> torch.nn.Module:
    model = load_model("advlab.zoo.smallnets:fashion_cnn", str(weights), mean=(0.5,), std=(0.5,), input_size=28)
    return model.to(memory_format=torch.channels_last).eval()  # as the runner holds it


FOLDER_RUN = ["--model", "advlab.zoo.smallnets:fashion_cnn", "--mean", "0.5", "--std", "0.5", "--input-size", "28",
              "--batch-size", "5"]


def test_a_folder_run_streams_to_the_in_memory_result(fashion, tmp_path: Path, monkeypatch) -> None:
    """PGD over 30 PNG files, never more than 8 decoded at once (DataLoader workers, chunks of 5; the
    adversarials read back from the chunks for predictions, distances and uint8 shards), gives image
    by image what PGD gives on the same images held in one tensor."""
    x, y = fashion.x_test[:30], fashion.y_test[:30]
    root = _image_folder(tmp_path / "images", x, y)
    reads = _bounded_reads(monkeypatch, 8)
    assert main(["attack", "--method", "pgd", *FOLDER_RUN, "--weights", str(fashion.weights), "--data",
                 f"folder:{root}", "--save-adversarials", "--out", str(tmp_path / "run")]) == 0
    # every file was read; at most 3 decodes per image (clean pass, attack chunk, then the report and shards
    # read clean files only where nothing replaced them, and distances come from the chunks)
    assert set(reads) == set(range(30)) and len(reads) <= 3 * 30
    row = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"][0]
    order = [int(Path(s["name"]).stem) for s in row["samples"]]  # the folder's order: by class, then file name

    model = _fashion_model(fashion.weights)
    xs, ys = x[order], y[order]
    with torch.no_grad():
        attacked = model(xs).argmax(1) == ys
    result = get_attack("pgd").cls()(model, xs[attacked], Untargeted(ys[attacked]), seed=0)
    x_adv = xs.clone()
    x_adv[attacked] = result.x_adv
    with torch.no_grad():
        adv_pred = model(x_adv).argmax(1)
    l2 = MEASURES["l2"].distance(xs, x_adv)
    assert [s["attacked"] for s in row["samples"]] == attacked.tolist() and 0 < int(attacked.sum()) < 30
    assert [s["adv_pred"] for s in row["samples"]] == adv_pred.tolist()
    won = [s["success"] for s in row["samples"]]
    assert any(won)
    assert np.allclose([s["l2"] for s in row["samples"] if s["success"]], l2[torch.tensor(won)].numpy(), rtol=1e-5)
    shards = sorted((tmp_path / "run" / row["adversarials_dir"]).glob("shard-*.pt"))
    saved = torch.cat([torch.load(p, weights_only=True)["x_adv"] for p in shards])
    assert torch.equal(saved, (x_adv * 255).round().to(torch.uint8))
    shown = torch.load(tmp_path / "run" / row["arrays"], weights_only=True)
    assert torch.equal(shown["x"], xs[:8]) and torch.allclose(shown["x_adv"], x_adv[:8], atol=1e-6)


def test_a_universal_perturbation_streams_its_minibatches(fashion, tmp_path: Path, monkeypatch) -> None:
    """The universal SGD solver reads each minibatch as it needs it (5 images at a time here, 30 in all)
    and finds the v it finds with every image in one tensor."""
    x, y = fashion.x_test[:30], fashion.y_test[:30]
    root = _image_folder(tmp_path / "images", x, y)
    _bounded_reads(monkeypatch, 8)
    settings = ["--solver", "sgd", "--eps", "0.1", "--max-passes", "2", "--set", "batch_size=5"]
    assert main(["attack", "--method", "universal", *FOLDER_RUN, "--weights", str(fashion.weights), "--data",
                 f"folder:{root}", *settings, "--out", str(tmp_path / "run")]) == 0
    row = json.loads((tmp_path / "run" / "results.json").read_text())["attacks"][0]
    v = torch.load(tmp_path / "run" / row["perturbation_file"], weights_only=True)["perturbation"]

    order = [int(Path(s["name"]).stem) for s in row["samples"]]
    model = _fashion_model(fashion.weights)
    xs = x[order]
    with torch.no_grad():
        clean = model(xs).argmax(1)
    attack = get_attack("universal").cls(solver="sgd", eps=0.1, max_passes=2, batch_size=5, progress=False)
    expected = attack(model, xs, Untargeted(clean), seed=0)
    assert float(v.abs().max()) > 0.05  # it moved
    torch.testing.assert_close(v, expected.extras["perturbation"].cpu(), rtol=0, atol=1e-5)
    assert [s["adv_pred"] for s in row["samples"]] == model(expected.x_adv).argmax(1).tolist()
