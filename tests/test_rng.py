"""Per-image counter-based noise: statistics, and independence from batch composition."""
from __future__ import annotations

import torch

from advlab.core.rng import image_keys, normal, step_keys, uniform


def test_noise_statistics():
    keys = image_keys(torch.rand(3, 3, 32, 32), seed=0)
    z = normal(step_keys(keys, 3, 0), (4, 10_000))
    assert z.shape == (3, 4, 10_000)
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1) < 0.01
    flat = z.flatten(1)
    assert abs(float(torch.corrcoef(flat)[0, 1])) < 0.02  # images draw unrelated noise
    assert abs(float((flat[0, :-1] * flat[0, 1:]).mean())) < 0.01  # neighbours are unrelated
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
