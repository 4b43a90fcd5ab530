"""The norm objects every attack uses (`advlab.core.norms`): distances, projections onto the ball and
[0, 1], steepest-ascent directions, budget checks and the exact shrinking of one perturbation."""
from __future__ import annotations

import pytest
import torch

from advlab.core.norms import MEASURES, NORMS, get_norm
from advlab.core.registry import ATTACKS


def _images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 3, 8, 8), generator=torch.Generator().manual_seed(seed))


def test_distances_are_the_textbook_ones():
    x, y = _images(), _images(seed=1)
    d = (y - x).flatten(1)
    assert torch.equal(MEASURES["linf"].distance(x, y), d.abs().amax(1))
    torch.testing.assert_close(MEASURES["l2"].distance(x, y), d.pow(2).sum(1).sqrt())
    torch.testing.assert_close(MEASURES["mse"].distance(x, y), d.pow(2).mean(1))
    assert list(MEASURES) == ["l2", "linf", "mse"] and list(NORMS) == ["linf", "l2"]


@pytest.mark.parametrize("name, eps", [("linf", 0.05), ("l2", 0.5)])
def test_projection_lands_in_the_ball_and_the_box_and_keeps_what_is_inside(name, eps):
    norm, x0 = NORMS[name], _images()
    far = x0 + torch.randn(x0.shape, generator=torch.Generator().manual_seed(2))
    eps_t = torch.full((len(x0), 1, 1, 1), eps)
    p = norm.project(far, x0, eps_t)
    assert (p >= 0).all() and (p <= 1).all()
    assert (norm.distance(x0, p) <= eps * (1 + 1e-6)).all()
    assert (norm.distance(x0, p) > eps * 0.5).all()  # projected, not collapsed to x0
    near = (x0 + 1e-4 * torch.sign(far - x0)).clamp(0, 1)
    torch.testing.assert_close(norm.project(near, x0, eps_t), near)


def test_steepest_directions_have_unit_size_per_image():
    grad = torch.randn((5, 3, 4, 4), generator=torch.Generator().manual_seed(3)) * torch.arange(1, 6).view(-1, 1, 1, 1)
    torch.testing.assert_close(NORMS["l2"].size(NORMS["l2"].steepest(grad)), torch.ones(5))
    assert set(NORMS["linf"].steepest(grad).unique().tolist()) <= {-1.0, 0.0, 1.0}


def test_shrinking_one_perturbation_is_exact_and_only_shrinks():
    gen = torch.Generator().manual_seed(0)
    big = torch.randn((3, 8, 8), generator=gen) * 10
    assert torch.equal(NORMS["linf"].shrink(big, 0.1), big.clamp(-0.1, 0.1))
    assert abs(float(NORMS["l2"].shrink(big, 2.0).norm()) - 2.0) <= 2.0 * 1e-6
    torch.testing.assert_close(NORMS["l2"].shrink(big, 2.0), big * 2.0 / big.norm())  # scaled, not re-directed
    small = big / big.norm()  # inside both balls: untouched
    assert torch.equal(NORMS["l2"].shrink(small, 2.0), small)
    assert torch.equal(NORMS["linf"].shrink(small * 0.01, 1.0), small * 0.01)


def test_budgets_are_checked_by_the_norm():
    assert NORMS["linf"].check_eps(8 / 255) == 8 / 255 and NORMS["l2"].check_eps(3.0) == 3.0
    for name, bad in (("linf", 1.5), ("linf", 0), ("l2", -1.0), ("l2", float("inf")), ("l2", "3")):
        with pytest.raises(ValueError, match=f"norm {name}"):
            NORMS[name].check_eps(bad)
    with pytest.raises(ValueError, match="linf, l2"):
        get_norm("l1")


def test_every_attack_is_bounded_in_a_norm_the_lab_knows():
    for entry in ATTACKS:
        assert entry.cls.norm in NORMS, entry.name
