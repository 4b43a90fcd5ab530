"""Per-image counter-based noise: statistics, and independence from batch composition."""
from __future__ import annotations

import torch

from advlab.core.rng import image_keys, normal, step_keys, uniform


def test_noise_statistics():
    """Bounds at 5 standard errors of each statistic (they were at 2 for the neighbour product, whose
    images were unseeded: about one run in twenty failed, depending on the test order)."""
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    keys = image_keys(images, seed=0)
    z = normal(step_keys(keys, 3, 0), (4, 10_000))
    assert z.shape == (3, 4, 10_000)
    se_mean, se_std = 1 / 120_000 ** 0.5, 1 / (2 * 120_000) ** 0.5
    assert abs(float(z.mean())) < 5 * se_mean and abs(float(z.std()) - 1) < 5 * se_std
    flat = z.flatten(1)  # (3, 40000)
    assert abs(float(torch.corrcoef(flat)[0, 1])) < 5 / 40_000 ** 0.5  # images draw unrelated noise
    assert abs(float((flat[0, :-1] * flat[0, 1:]).mean())) < 5 / 39_999 ** 0.5  # neighbours are unrelated
    u = uniform(keys, (50_000,))
    assert 0 < float(u.min()) and float(u.max()) < 1 and abs(float(u.mean()) - 0.5) < 0.01


def test_keys_follow_the_image_not_its_position():
    x = torch.rand(5, 3, 16, 16)
    keys = image_keys(x, seed=1)
    assert len(set(keys.tolist())) == 5
    torch.testing.assert_close(image_keys(x.flip(0), seed=1), keys.flip(0))
    assert not torch.equal(image_keys(x, seed=2), keys)
    a = normal(step_keys(keys, 3, 17), (2, 100))
    b = normal(step_keys(keys[2:3], 3, 17), (2, 100))
    assert torch.equal(a[2], b[0])
    assert not torch.equal(normal(step_keys(keys, 3, 18), (2, 100)), a)
