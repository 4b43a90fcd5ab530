"""Input-transformation defenses (JPEG, bit-depth, Gaussian blur, median): registry, the Defense
contract (shape, dtype, range, determinism, settings), what each transformation does to real images,
and BPDA (Athalye et al., ICML 2018) through `Defended` on the digits CNN."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from advlab.attacks.gradient import pgd_linf
from advlab.core import registry
from advlab.core.defense import Defended, Defense
from advlab.defenses.transforms import JPEG, BitDepth, GaussianBlur, MedianFilter

CLASSES = {"jpeg": JPEG, "bit-depth": BitDepth, "blur": GaussianBlur, "median": MedianFilter}


def astronaut(size: int = 64, channels: int = 3) -> torch.Tensor:
    """skimage's astronaut photo, (1, C, size, size) in [0, 1] on the uint8 grid."""
    from skimage.data import astronaut as photo

    x = F.interpolate(torch.tensor(photo()).permute(2, 0, 1)[None].float() / 255, size=(size, size), mode="area")
    if channels == 1:
        x = x.mean(dim=1, keepdim=True)
    return (x * 255).round() / 255


def mae(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().mean())


def total_variation(x: torch.Tensor) -> float:
    return float((x[..., 1:, :] - x[..., :-1, :]).abs().sum() + (x[..., :, 1:] - x[..., :, :-1]).abs().sum())


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# ---------------------------------------------------------------- registry and contract
def test_registered_for_every_task():
    listed = registry.defenses()
    for name, cls in CLASSES.items():
        info = registry.get_defense(name)
        assert info.cls is cls and listed[name] is info and cls.name == name
        assert info.tasks == {registry.ANY_TASK} and info.summary  # an input transformation serves every task
        assert all(info.supports(task) for task in ("classification", "segmentation", "detection", "a-plugin-task"))
    assert [n for n in CLASSES if not CLASSES[n].differentiable] == ["jpeg", "bit-depth"]


@pytest.mark.parametrize("defense, params, variant", [
    (JPEG(), {"quality": 75, "bpda": True}, "q75"), (BitDepth(), {"bits": 4, "bpda": True}, "4 bits"),
    (BitDepth(bits=2, bpda=False), {"bits": 2, "bpda": False}, "2 bits, no BPDA"),
    (GaussianBlur(), {"sigma": 1.0}, "sigma 1"), (MedianFilter(size=5), {"size": 5}, "5x5"),
    (GaussianBlur(sigma=0.5), {"sigma": 0.5}, "sigma 0.5"),
])
def test_settings_are_keyword_only_attributes_with_a_short_label(defense, params, variant):
    assert isinstance(defense, Defense)
    assert defense.params() == params and defense.variant() == variant
    assert defense.describe()["method"] == defense.name
    with pytest.raises(TypeError):
        type(defense)(*params.values())


@pytest.mark.parametrize("cls, settings, name", [
    (JPEG, {"quality": 0}, "quality"), (JPEG, {"quality": 101}, "quality"), (JPEG, {"quality": 75.0}, "quality"),
    (BitDepth, {"bits": 9}, "bits"), (BitDepth, {"bpda": "no"}, "bpda"), (BitDepth, {"bits": 0}, "bits"), (BitDepth, {"bits": True}, "bits"),
    (GaussianBlur, {"sigma": 0}, "sigma"), (GaussianBlur, {"sigma": -1.0}, "sigma"),
    (GaussianBlur, {"sigma": math.nan}, "sigma"), (GaussianBlur, {"sigma": "1"}, "sigma"),
    (MedianFilter, {"size": 2}, "size"), (MedianFilter, {"size": 4}, "size"), (MedianFilter, {"size": 1}, "size"),
    (MedianFilter, {"size": 3.0}, "size"),
])
def test_bad_settings_raise_value_errors_naming_the_setting(cls, settings, name):
    with pytest.raises(ValueError, match=name):
        cls(**settings)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("defense", [JPEG(quality=50), BitDepth(bits=3), GaussianBlur(sigma=1.5), MedianFilter()],
                         ids=lambda d: d.name)
def test_shape_dtype_range_kept_and_deterministic(defense, channels):
    x = torch.cat([astronaut(32, channels), torch.rand(2, channels, 32, 32, generator=torch.Generator().manual_seed(0))])
    out = defense(x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert mae(out, x) > 1e-3  # it does something
    assert torch.equal(defense(x), out)
    # per image: the rest of the batch does not matter (up to float rounding: conv kernels depend on batch size)
    assert torch.allclose(defense(x[1:2]), out[1:2], atol=1e-6)


def test_small_images_and_empty_batches():
    x = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(0))  # smaller than the kernels: replicate pad
    for defense in (JPEG(), GaussianBlur(sigma=3.0), MedianFilter(size=7)):
        assert defense(x).shape == x.shape and defense(x[:0]).shape == (0, 3, 5, 5)


# ---------------------------------------------------------------- JPEG
@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_quality_trades_fidelity(channels):
    x = astronaut(64, channels)
    errors = {q: mae(JPEG(quality=q)(x), x) for q in (100, 75, 10)}
    # measured on the 64x64 astronaut: q100 0.0011 (gray) / 0.012 (RGB: libjpeg subsamples chroma 4:2:0
    # even at q100), q75 0.020 / 0.030, q10 0.054 / 0.067 (mean absolute error on [0, 1])
    assert errors[100] < 0.02
    assert errors[75] > 0.01
    assert errors[10] > 0.04 and errors[10] > 3 * errors[100]
    out = JPEG(quality=75)(x)
    assert torch.equal(out * 255, (out * 255).round())  # decoded pixels, on the uint8 grid


def test_jpeg_needs_one_or_three_channels():
    with pytest.raises(ValueError, match="channels"):
        JPEG()(torch.rand(1, 4, 16, 16))


# ---------------------------------------------------------------- bit depth
def test_bit_depth_levels():
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert set(BitDepth(bits=1)(x).unique().tolist()) == {0.0, 1.0}
    assert torch.allclose(BitDepth(bits=2)(x).unique(), torch.tensor([0, 1 / 3, 2 / 3, 1]))
    grid = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16) / 255
    assert torch.equal(BitDepth(bits=8)(grid), grid)
    uint8 = torch.randint(0, 256, (2, 3, 8, 8), generator=torch.Generator().manual_seed(1)).float() / 255
    assert torch.equal(BitDepth(bits=8)(uint8), uint8)


# ---------------------------------------------------------------- blur
def test_blur_matches_torchvision_and_smooths():
    from torchvision.transforms.functional import gaussian_blur

    x = astronaut(64)
    out = GaussianBlur(sigma=1.0)(x)
    # the same kernel (size 7 = 2 * ceil(3 sigma) + 1) and reflect padding as torchvision's reference
    assert torch.allclose(out, gaussian_blur(x, kernel_size=[7, 7], sigma=[1.0, 1.0]), atol=1e-5)
    constant = torch.full((2, 3, 16, 16), 0.37)
    assert torch.allclose(GaussianBlur(sigma=2.0)(constant), constant, atol=1e-6)
    # total variation 1923 -> 1079 at sigma 1 (measured)
    assert total_variation(out) < 0.7 * total_variation(x)


def test_blur_and_median_pass_gradients():
    x = astronaut(16).requires_grad_(True)
    weights = torch.rand(x.shape, generator=torch.Generator().manual_seed(0))
    (grad,) = torch.autograd.grad((GaussianBlur()(x) * weights).sum(), x)
    assert torch.isfinite(grad).all() and (grad != 0).float().mean() > 0.9
    (grad,) = torch.autograd.grad(MedianFilter()(x).sum(), x)
    assert float(grad.sum()) == x.numel()  # each output's gradient goes to the one element it selected
    assert (grad != 0).any()


# ---------------------------------------------------------------- median
def test_median_removes_isolated_salt_and_pepper_exactly():
    x = torch.full((2, 3, 16, 16), 0.5)
    x[..., 2::4, 2::4] = 1.0  # salt and pepper: at most one of each in any 3x3 window
    x[..., 0::4, 0::4] = 0.0
    assert torch.equal(MedianFilter(size=3)(x), torch.full_like(x, 0.5))


def test_median_matches_scipy():
    from scipy.ndimage import median_filter

    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    for size in (3, 5):
        # scipy's "mirror" is torch's "reflect" (the edge pixel is not repeated)
        ref = median_filter(x.numpy(), size=(1, 1, size, size), mode="mirror")
        assert np.array_equal(MedianFilter(size=size)(x).numpy(), ref)


# ---------------------------------------------------------------- BPDA through Defended, on the digits CNN
@pytest.mark.parametrize("defense, gradient", [
    (BitDepth(bits=2), "bpda"), (JPEG(quality=75), "bpda"), (MedianFilter(size=3), "exact"), (GaussianBlur(), "exact"),
], ids=lambda v: v.name if isinstance(v, Defense) else v)
def test_adaptive_pgd_through_defended(digits, defense, gradient):
    x, y = digits.correct(64)
    defended = Defended(digits.model, defense)
    assert defended.adaptive_gradient == gradient
    adv = pgd_linf(defended, x, y, eps=0.3, steps=10, step_size=0.075)
    assert ((adv - x).abs().amax(dim=(1, 2, 3)) <= 0.3 + 1e-6).all()
    # measured adaptive accuracy: bit-depth 2 bits 0.000, jpeg q75 0.000, median 3x3 0.016, blur sigma 1 0.000
    assert accuracy(defended, adv, y) <= 0.2


def test_without_bpda_bit_depth_masks_the_gradient(digits):
    x, y = digits.correct(64)
    squeeze = BitDepth(bits=2)
    defended = Defended(digits.model, squeeze)

    def naive(z):  # differentiated as written: round() has a zero gradient everywhere
        return digits.model(squeeze(z))

    probe = x.clone().requires_grad_(True)
    (masked,) = torch.autograd.grad(F.cross_entropy(naive(probe), y), probe)
    (bpda,) = torch.autograd.grad(F.cross_entropy(defended(probe), y), probe)
    assert not masked.any() and bpda.abs().sum() > 0
    clean = accuracy(defended, x, y)  # 0.984 measured
    naive_adv = pgd_linf(naive, x, y, eps=0.3, steps=10, step_size=0.075)
    bpda_adv = pgd_linf(defended, x, y, eps=0.3, steps=10, step_size=0.075)
    # measured: 0.922 without BPDA (only the random start moves the images: every step is sign(0) = 0),
    # 0.000 with it
    assert accuracy(defended, naive_adv, y) >= 0.7 and clean >= 0.9
    assert accuracy(defended, bpda_adv, y) <= 0.2


# ---------------------------------------------------------------- GPU
@pytest.mark.gpu  # `make test-gpu` on a CUDA machine; CI has none
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("channels", [1, 3])
def test_defenses_run_on_the_gpu(channels):
    x = astronaut(64, channels)
    for defense in (JPEG(quality=75), BitDepth(bits=3), GaussianBlur(sigma=1.0), MedianFilter()):
        out = defense(x.cuda())
        assert out.is_cuda and out.shape == x.shape and out.dtype == x.dtype
        if isinstance(defense, JPEG):  # nvjpeg (RGB) need not match libjpeg bit for bit
            assert abs(mae(out.cpu(), x) - mae(defense(x), x)) < 0.01
        else:
            assert torch.allclose(out.cpu(), defense(x), atol=1e-5)
