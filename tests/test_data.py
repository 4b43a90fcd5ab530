"""advlab.data.sources: image sources, labels, geometry and the errors a user sees."""
from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from advlab.core.errors import AdvlabError
from advlab.data.image_set import ImageSet
from advlab.data.sources import load_images
from advlab.tasks import get_task
from advlab.zoo.models import load_model
from advlab.zoo.wrappers import ImageClassifier

FOOLBOX_DATA = Path(next(iter(importlib.util.find_spec("foolbox").submodule_search_locations))) / "data"
SAMPLES = sorted(FOOLBOX_DATA.glob("imagenet_*.jpg"))
SAMPLE_LABELS = [int(p.stem.split("_")[-1]) for p in SAMPLES]
IMAGENET_NAMES = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
WNIDS = (Path(__file__).parents[1] / "advlab" / "data" / "imagenet_wnids.txt").read_text().split()


def tiny(classes: list[str] | int = 10, *, input_size: int | None = 32, in_channels: int = 3) -> ImageClassifier:
    names = [str(i) for i in range(classes)] if isinstance(classes, int) else classes
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, len(names)))
    return ImageClassifier(net, name="tiny", weights="random", mean=(0.5,), std=(0.5,), input_size=input_size,
                           class_names=names, in_channels=in_channels)


def pil_uint8(path: Path) -> torch.Tensor:  # (3, H, W) uint8, plain PIL decode
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)


def raises(match: str):
    return pytest.raises(AdvlabError, match=match)


# ---------------------------------------------------------------- imagenet-samples
def test_imagenet_samples_labels_and_torchvision_geometry() -> None:
    s = load_images("imagenet-samples", tiny(IMAGENET_NAMES, input_size=224))
    assert isinstance(s, ImageSet) and len(s) == 20
    assert s.x.shape == (20, 3, 224, 224) and s.x.dtype == torch.float32 and s.x.device.type == "cpu"
    assert s.y.dtype == torch.int64 and s.y.tolist() == SAMPLE_LABELS
    assert s.names == [p.name for p in SAMPLES] and s.names[0].startswith("imagenet_00_")
    assert s.label_source == "ground-truth" and s.source == "imagenet-samples"
    # Same pixels as torchvision's ImageNet eval pipeline on PIL images: Resize(256) + CenterCrop(224).
    ref = torchvision.transforms.Compose([torchvision.transforms.Resize(256), torchvision.transforms.CenterCrop(224),
                                          torchvision.transforms.PILToTensor()])
    assert torch.equal(s.x[0], ref(Image.open(SAMPLES[0]).convert("RGB")).float() / 255)
    # Sample 10 is 1024x683: torch's antialiased uint8 resize rounds a few pixels 1 level off PIL's.
    diff = (s.x[10] - ref(Image.open(SAMPLES[10]).convert("RGB")).float() / 255).abs()
    assert float(diff.max()) <= 1 / 255 + 1e-6 and float((diff > 0).float().mean()) < 0.01


def test_imagenet_samples_bit_exact_when_size_matches() -> None:
    s = load_images("imagenet-samples", tiny(1000, input_size=512), n=10)  # the first 10 are 512x512
    assert s.x.shape == (10, 3, 512, 512)
    for i in range(10):
        assert torch.equal(s.x[i], pil_uint8(SAMPLES[i]).float() / 255)


def test_mobilenet_v2_classifies_samples() -> None:
    model = load_model("mobilenet_v2", "IMAGENET1K_V1")
    s = load_images("imagenet-samples", model)
    with torch.no_grad():
        correct = int((model(s.x).argmax(1) == s.y).sum())
    assert correct >= 18, f"MobileNetV2 got {correct}/20 foolbox samples right"


def test_imagenet_samples_need_1000_classes() -> None:
    with raises("labeled in ImageNet's 1000 classes; the model has 10"):
        load_images("imagenet-samples", tiny(10))


# ---------------------------------------------------------------- folder:PATH
def make_folder(root: Path, layout: dict[str, list[int]]) -> None:
    for sub, indices in layout.items():
        (root / sub).mkdir(parents=True)
        for i in indices:
            shutil.copy(SAMPLES[i], root / sub / SAMPLES[i].name)


def test_folder_maps_names_integers_and_wnids(tmp_path: Path) -> None:
    # samples 0: 243 'bull mastiff'; 1: 559 'folding chair'; 2: 438 'beaker'; 6 and 7: 609 'jeep'
    make_folder(tmp_path, {"Bull_Mastiff": [0], "559": [1], WNIDS[438]: [2], "jeep": [6, 7]})
    model = tiny(IMAGENET_NAMES, input_size=224)
    s = load_images(f"folder:{tmp_path}", model)
    assert s.names == ["559/imagenet_01_559.jpg", "Bull_Mastiff/imagenet_00_243.jpg",
                       "jeep/imagenet_06_609.jpg", "jeep/imagenet_07_609.jpg", f"{WNIDS[438]}/imagenet_02_438.jpg"]
    assert s.y.tolist() == [559, 243, 609, 609, 438] and s.label_source == "ground-truth"
    ref = load_images("imagenet-samples", model, n=8).x
    assert torch.equal(s.x, ref[[1, 0, 6, 7, 2]])
    assert len(load_images(f"folder:{tmp_path}", model, n=2)) == 2


def test_wnid_list_is_imagenet_order() -> None:
    assert len(WNIDS) == 1000 == len(set(WNIDS)) and WNIDS == sorted(WNIDS)
    assert (WNIDS[0], WNIDS[243], WNIDS[999]) == ("n01440764", "n02108422", "n15075141")


def test_folder_grayscale_model_and_no_input_size(tmp_path: Path) -> None:
    make_folder(tmp_path, {"0": [0], "1": [1]})
    s = load_images(f"folder:{tmp_path}", tiny(2, input_size=None, in_channels=1))
    assert s.x.shape == (2, 1, 512, 512) and s.y.tolist() == [0, 1]
    shutil.copy(SAMPLES[10], tmp_path / "1")  # 1024x683 among 512x512
    with raises(r"images differ in size .* set --input-size"):
        load_images(f"folder:{tmp_path}", tiny(2, input_size=None))


@pytest.mark.parametrize("sub, classes, match", [
    ("cats", 10, r"subfolder 'cats' maps to no class .* index \(0..9\), class name .* WordNet id"),
    ("n01440764", 10, r"subfolder 'n01440764' maps to no class"),  # wnids need a 1000-class model
    ("12", 10, r"subfolder '12' is class index 12 but the model has 10 classes"),
    ("cardigan", IMAGENET_NAMES, r"subfolder 'cardigan' matches classes \[264, 474\]"),
])
def test_folder_unmapped_subfolder(tmp_path: Path, sub: str, classes: object, match: str) -> None:
    make_folder(tmp_path, {sub: [0]})
    with raises(match):
        load_images(f"folder:{tmp_path}", tiny(classes))  # type: ignore[arg-type]


def test_folder_rejects_loose_images_and_empty(tmp_path: Path) -> None:
    with raises("no images"):
        load_images(f"folder:{tmp_path}", tiny())
    shutil.copy(SAMPLES[0], tmp_path / "x.JPG")
    with raises(r"1 images lie directly in .* subfolder per class"):
        load_images(f"folder:{tmp_path}", tiny())


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    """Files are decoded when read: in the main process, or in DataLoader workers when streamed (the
    worker's error arrives as the same one line, not a traceback)."""
    make_folder(tmp_path, {"0": [0, 1, 3]})
    (tmp_path / "0" / "broken.jpg").write_bytes(b"this is not a jpeg" * 10)
    with raises(r"^cannot read image .*broken\.jpg.*replace it$"):
        _ = load_images(f"folder:{tmp_path}", tiny()).x
    (tmp_path / "0" / "broken.jpg").write_bytes(SAMPLES[0].read_bytes()[:3000])  # truncated JPEG
    with raises(r"^cannot read image .*broken\.jpg.*replace it$"):
        list(load_images(f"folder:{tmp_path}", tiny()).images.batches(2))


def test_folder_images_stream_in_workers_as_decoded_in_place(tmp_path: Path) -> None:
    """A folder is read on demand: batches (decoded in DataLoader workers), any index and the whole
    set give the same pixels."""
    make_folder(tmp_path, {"jeep": [6, 7], "559": [1], "Bull_Mastiff": [0, 3]})
    s = load_images(f"folder:{tmp_path}", tiny(IMAGENET_NAMES, input_size=64))
    whole = s.x  # (5, 3, 64, 64)
    assert whole.shape == (5, 3, 64, 64) and s.images.shape == whole.shape
    streamed = list(s.images.batches(2))
    assert [len(b) for b in streamed] == [2, 2, 1] and torch.equal(torch.cat(streamed), whole)
    pick = torch.tensor([4, 0, 2])
    assert torch.equal(s.images[pick], whole[pick]) and torch.equal(s.images[3], whole[3])
    assert torch.equal(torch.cat(list(s.images.subset(pick).batches(2))), whole[pick])


# ---------------------------------------------------------------- tensors:FILE
def save(path: Path, **arrays: object) -> str:
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        torch.save(arrays, path)
    return f"tensors:{path}"


def test_tensors_round_trip_layouts(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 8, 9, generator=g)  # (N, C, H, W)
    y = torch.tensor([0, 1, 2, 3, -1])
    s = load_images(save(tmp_path / "a.npz", x=x.numpy(), y=y.numpy()), tiny())
    assert torch.equal(s.x, x) and torch.equal(s.y, y) and s.label_source == "ground-truth"
    assert s.names[4] == f"{tmp_path / 'a.npz'}[4]" and s.x.dtype == torch.float32
    s = load_images(save(tmp_path / "b.pt", x=x.permute(0, 2, 3, 1).double(), y=y), tiny(), n=3)  # (N, H, W, C)
    assert torch.equal(s.x, x[:3]) and s.y.tolist() == [0, 1, 2]
    u8 = torch.randint(0, 256, (4, 8, 9, 3), dtype=torch.uint8, generator=g)
    s = load_images(save(tmp_path / "c.npz", x=u8.numpy()), tiny())
    assert torch.equal(s.x, u8.permute(0, 3, 1, 2).float() / 255)
    assert s.y.tolist() == [-1] * 4 and s.label_source == "none"
    gray = torch.rand(2, 8, 9, generator=g)  # (N, H, W) -> repeated to the model's 3 channels
    s = load_images(save(tmp_path / "d.pt", x=gray), tiny())
    assert s.x.shape == (2, 3, 8, 9) and all(torch.equal(s.x[:, c], gray) for c in range(3))
    s = load_images(save(tmp_path / "e.pt", x=gray.unsqueeze(1)), tiny(in_channels=1))
    assert torch.equal(s.x, gray.unsqueeze(1))


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((2, 2, 8, 8), np.float32)}, r"x has shape \(2, 2, 8, 8\); accepted layouts: \(N, C, H, W\)"),
    ({"x": np.zeros((1, 2, 3, 8, 8), np.float32)}, r"x has shape \(1, 2, 3, 8, 8\); accepted layouts"),
    ({"x": np.zeros((8, 8, 3), np.float32)}, r"add a batch axis"),
    ({"x": np.full((2, 3, 4, 4), 255.0, np.float32)}, r"x values span \[255, 255\] .* \[0, 1\]; divide by 255"),
    ({"x": np.full((2, 3, 4, 4), -0.5, np.float32)}, r"x values span \[-0.5, -0.5\]"),
    ({"x": np.zeros((2, 3, 4, 4), np.int64)}, r"x has dtype torch.int64"),
    ({"x": np.zeros((2, 3, 4, 4), np.float32), "y": np.zeros(3, np.int64)}, r"y has 3 labels for 2 images"),
    ({"x": np.zeros((2, 3, 4, 4), np.float32), "y": np.array([0, 10])}, r"y spans \[0, 10\] .* 10 classes"),
    ({"images": np.zeros((2, 3, 4, 4), np.float32)}, r"has no 'x' \(found \['images'\]\)"),
    ({"x": np.zeros((0, 3, 4, 4), np.float32)}, r"x holds no images"),
])
def test_tensors_errors(tmp_path: Path, arrays: dict[str, np.ndarray], match: str) -> None:
    with raises(match):
        load_images(save(tmp_path / "t.npz", **arrays), tiny())


def test_tensors_three_to_one_channel_is_an_error(tmp_path: Path) -> None:
    spec = save(tmp_path / "t.pt", x=torch.rand(2, 3, 4, 4))
    with raises("x has 3 channels but the model wants 1"):
        load_images(spec, tiny(in_channels=1))


def test_tensors_bad_files(tmp_path: Path) -> None:
    with raises(r"file .*nope\.npz does not exist"):
        load_images(f"tensors:{tmp_path / 'nope.npz'}", tiny())
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with raises(r"cannot read .*junk\.pt"):
        load_images(f"tensors:{tmp_path / 'junk.pt'}", tiny())
    (tmp_path / "a.csv").write_text("1,2")
    with raises(r"unsupported file type '.csv'"):
        load_images(f"tensors:{tmp_path / 'a.csv'}", tiny())


# ---------------------------------------------------------------- photos
def test_photos_labeled_by_prediction() -> None:
    """The photos carry no labels (-1); the task takes the model's clean prediction as their reference."""
    model = tiny(10).eval()
    s = load_images("photos", model)
    assert len(s) >= 8 and s.label_source == "prediction" and s.x.shape[1:] == (3, 32, 32)
    assert {"astronaut.png", "grace_hopper.jpg", "china.jpg"} <= set(s.names)
    assert bool((s.y == -1).all())
    task = get_task("classification")
    with torch.no_grad():
        assert torch.equal(task.reference(s, task.predict(model, s.x, 4, torch.device("cpu"))), model(s.x).argmax(1))
    assert len(load_images("photos", model, n=3)) == 3


# ---------------------------------------------------------------- common errors
@pytest.mark.parametrize("spec, n, match", [
    ("imagenet", None, (r"unknown image source 'imagenet'; use one of: imagenet-samples, photos, "
                        r"fashion-mnist\[:train\|test\], fashion-scenes\[:train\|test\], folder:PATH, tensors:FILE, "
                        r"pairs:DIR, voc:ROOT\[:YEAR\[:SPLIT\]\]")),
    ("fashion-mnist:val", None, r"unknown image source 'fashion-mnist:val'"),
    ("folder:", None, r"unknown image source"),
    ("folder:/no/such/dir", None, r"directory /no/such/dir does not exist"),
    ("imagenet-samples", 21, r"imagenet-samples has 20 images; lower -n"),
    ("imagenet-samples", 0, r"-n must be a positive number of images, got 0"),
])
def test_spec_errors(spec: str, n: int | None, match: str) -> None:
    with raises(match):
        load_images(spec, tiny(1000), n=n)


def test_bare_directory_hints_folder_scheme(tmp_path: Path) -> None:
    with raises(f"did you mean folder:{tmp_path}"):
        load_images(str(tmp_path), tiny())


def test_fashion_mnist_reads_the_real_idx_files():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    model = ImageClassifier(net, name="t", weights="random", mean=(0.5,), std=(0.5,), input_size=28,
                            class_names=[str(i) for i in range(10)], in_channels=1)
    train = load_images("fashion-mnist:train", model, n=100)
    test = load_images("fashion-mnist", model)
    assert train.x.shape == (100, 1, 28, 28) and len(test) == 10_000
    assert train.y[:5].tolist() == [9, 0, 0, 3, 0]  # the published first training labels
    assert torch.bincount(test.y, minlength=10).tolist() == [1000] * 10
    assert 0.25 < float(test.x.mean()) < 0.35 and float(test.x.max()) == 1.0
    assert not torch.equal(train.x[:10], test.x[:10])
