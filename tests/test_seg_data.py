"""Segmentation data sources: pairs:DIR (images + index/palette masks) and voc:ROOT (torchvision's
VOCSegmentation from a local root, never downloading), shown on real fashion-scenes written in those
layouts; their one-line errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.core.errors import AdvlabError
from advlab.data.sources import load_images


def _png(x: torch.Tensor) -> Image.Image:  # (3, H, W) in [0, 1]
    return Image.fromarray((x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def _palette_mask(mask: torch.Tensor) -> Image.Image:  # (H, W) class ids -> a palette PNG, VOC-style
    image = Image.fromarray(mask.numpy().astype(np.uint8), mode="P")
    image.putpalette([v for k in range(256) for v in (k * 23 % 256, k * 57 % 256, k * 91 % 256)])
    return image


@pytest.fixture()
def pairs_dir(segmenter, tmp_path):
    root = tmp_path / "pairs"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(4):
        _png(segmenter.x[i]).save(root / "images" / f"scene{i}.png")
        mask = segmenter.masks[i].clone()
        mask[0, :] = 255  # a void row
        (_palette_mask(mask) if i % 2 else Image.fromarray(mask.numpy().astype(np.uint8), mode="L")).save(
            root / "masks" / f"scene{i}.png")
    return root


def test_pairs_load_images_and_masks(segmenter, pairs_dir):
    data = load_images(f"pairs:{pairs_dir}", segmenter.model)
    assert data.x.shape == (4, 3, 48, 48) and data.y.shape == (4, 48, 48) and data.label_source == "ground-truth"
    assert torch.allclose(data.x, segmenter.x[:4], atol=0.5 / 255 + 1e-6)  # PNG keeps 8 bits
    expected = segmenter.masks[:4].clone()
    expected[:, 0, :] = 255
    assert torch.equal(data.y, expected)  # index (L) and palette (P) masks alike
    assert data.names == [f"scene{i}.png" for i in range(4)]
    assert len(load_images(f"pairs:{pairs_dir}", segmenter.model, n=2)) == 2


def test_pairs_stream_their_images_and_keep_masks_in_one_byte(segmenter, pairs_dir):
    """A mask set of any size: images decoded on demand (never all in memory), masks uint8; class ids
    above 255 (a 16-bit PNG) keep int64, for every mask of the set."""
    from advlab.core.images import FileImages

    data = load_images(f"pairs:{pairs_dir}", segmenter.model)
    assert isinstance(data.images, FileImages) and data.y.dtype == torch.uint8
    wide = np.zeros((48, 48), np.uint16)
    wide[5:9, 5:9] = 300
    Image.fromarray(wide).save(pairs_dir / "masks" / "scene2.png")
    data = load_images(f"pairs:{pairs_dir}", segmenter.model)
    assert data.y.dtype == torch.int64 and int(data.y[2].max()) == 300 and int(data.y[0, 0, 0]) == 255


def test_pairs_errors(segmenter, pairs_dir):
    (pairs_dir / "images" / "extra.png").write_bytes((pairs_dir / "images" / "scene0.png").read_bytes())
    with pytest.raises(AdvlabError, match="1 images have no mask .* extra.png"):
        load_images(f"pairs:{pairs_dir}", segmenter.model)
    (pairs_dir / "images" / "extra.png").unlink()
    Image.new("L", (24, 24)).save(pairs_dir / "masks" / "scene1.png")
    with pytest.raises(AdvlabError, match="mask scene1.png is \\(24, 24\\) but its image is \\(48, 48\\)"):
        load_images(f"pairs:{pairs_dir}", segmenter.model)
    Image.new("RGB", (48, 48)).save(pairs_dir / "masks" / "scene1.png")
    with pytest.raises(AdvlabError, match="mask scene1.png is a RGB image"):
        load_images(f"pairs:{pairs_dir}", segmenter.model)
    with pytest.raises(AdvlabError, match="expected .*images and .*masks"):
        load_images(f"pairs:{pairs_dir / 'images'}", segmenter.model)


def test_images_of_different_sizes_need_an_input_size(segmenter, pairs_dir):
    from advlab.zoo.models import load_model
    from advlab.zoo.segnet import MEAN, STD, WEIGHTS

    _png(torch.nn.functional.interpolate(segmenter.x[:1], size=(64, 80))[0]).save(pairs_dir / "images" / "scene3.png")
    Image.fromarray(np.zeros((64, 80), np.uint8), mode="L").save(pairs_dir / "masks" / "scene3.png")
    with pytest.raises(AdvlabError, match="images differ in size .*set --input-size"):
        load_images(f"pairs:{pairs_dir}", segmenter.model)
    sized = load_model("advlab.zoo.segnet:fashion_segnet", str(WEIGHTS), mean=[MEAN], std=[STD], input_size=48)
    data = load_images(f"pairs:{pairs_dir}", sized)
    assert data.x.shape == (4, 3, 48, 48) and data.y.shape == (4, 48, 48)
    assert set(data.y[3].unique().tolist()) == {0}  # masks resized with nearest neighbours: ids stay ids


def test_voc_from_a_local_root_never_downloads(segmenter, tmp_path):
    from advlab.zoo.models import load_model

    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True)
    stems = ["2012_000001", "2012_000002"]
    for i, stem in enumerate(stems):
        _png(segmenter.x[i]).save(voc / "JPEGImages" / f"{stem}.jpg", quality=95)
        _palette_mask(segmenter.masks[i]).save(voc / "SegmentationClass" / f"{stem}.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(stems) + "\n")
    model = load_model("lraspp_mobilenet_v3_large", "none")  # 21 VOC classes
    data = load_images(f"voc:{tmp_path}", model)
    assert data.names == [f"{s}.jpg" for s in stems] and torch.equal(data.y, segmenter.masks[:2])
    assert data.class_names is not None and data.class_names[15] == "person"
    with pytest.raises(AdvlabError, match="no VOC2012 train segmentation set .*extract VOCtrainval"):
        load_images(f"voc:{tmp_path}:2012:train", model)
    with pytest.raises(AdvlabError, match="no VOC2012 val segmentation set"):
        load_images(f"voc:{tmp_path / 'nowhere'}", model)
    with pytest.raises(AdvlabError, match="is labeled in the 21 VOC classes"):
        load_images(f"voc:{tmp_path}", segmenter.model)
    with pytest.raises(AdvlabError, match="holds per-pixel masks for segmentation models"):
        load_images(f"voc:{tmp_path}", load_model("mobilenet_v2", "none"))
