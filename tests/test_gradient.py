"""FGSM (Goodfellow et al., ICLR 2015) and PGD (Madry et al., ICLR 2018): effect, budgets, strength
ordering, targeted mode, randomness, settings, per-image budgets, autocast."""
from __future__ import annotations

import itertools

import pytest
import torch

import advlab.attacks.gradient  # noqa: F401  (registers fgsm and pgd)
from advlab.attacks.gradient import FGSM, PGD, pgd_l2, pgd_linf
from advlab.core import registry
from advlab.core.criteria import Targeted, Untargeted


def accuracy(model, x_adv, y) -> float:
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def pgd(model, x, criterion, seed=0, **settings):
    return PGD(**settings)(model, x, criterion, seed=seed)


def test_pgd_linf_drives_accuracy_down_inside_the_ball(digits):
    x, y = digits.correct(128)
    grads = [None if p.grad is None else p.grad.clone() for p in digits.model.parameters()]
    r = pgd(digits.model, x, Untargeted(y), eps=0.3)
    assert accuracy(digits.model, r.x_adv, y) <= 0.05
    assert r.success.float().mean() >= 0.95
    assert ((r.x_adv - x).abs().amax(dim=(1, 2, 3)) <= 0.3 + 1e-6).all()
    assert 0 <= float(r.x_adv.min()) and float(r.x_adv.max()) <= 1
    assert torch.allclose(r.distance, (r.x_adv - x).flatten(1).abs().amax(1))
    assert (r.queries == 10).all()
    for before, p in zip(grads, digits.model.parameters()):  # gradients w.r.t. the input only
        assert (p.grad is None) if before is None else torch.equal(p.grad, before)


def test_fgsm_lowers_accuracy_and_pgd_is_at_least_as_strong(digits):
    x, y = digits.correct(128)
    f = FGSM(eps=0.3)(digits.model, x, Untargeted(y))
    p = pgd(digits.model, x, Untargeted(y), eps=0.3)
    fgsm_acc, pgd_acc = accuracy(digits.model, f.x_adv, y), accuracy(digits.model, p.x_adv, y)
    assert fgsm_acc <= 0.5  # from 100%
    assert pgd_acc <= fgsm_acc
    # one full signed step: every pixel moved by eps unless clipped at 0 or 1, or its gradient is 0
    assert ((f.x_adv - x).abs().amax(dim=(1, 2, 3)) <= 0.3 + 1e-6).all()
    assert (f.queries == 1).all() and f.distance.max() > 0.29
    # no randomness in FGSM
    again = FGSM(eps=0.3)(digits.model, x, Untargeted(y), seed=5)
    assert torch.equal(again.x_adv, f.x_adv)


def test_pgd_l2_respects_the_ball_and_beats_random_noise_of_the_same_norm(digits):
    x, y = digits.correct(128)
    eps = 1.0
    r = pgd(digits.model, x, Untargeted(y), eps=eps, norm="l2")
    l2 = (r.x_adv - x).flatten(1).norm(dim=1)
    assert (l2 <= eps + 1e-5).all()
    assert l2.median() > 0.9 * eps  # it uses its budget
    assert torch.allclose(r.distance, l2)  # distances reported in the instance's norm
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    noise = noise * (eps / noise.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    noise_acc = accuracy(digits.model, (x + noise).clamp(0, 1), y)
    pgd_acc = accuracy(digits.model, r.x_adv, y)
    assert noise_acc >= 0.8  # random directions barely matter ...
    assert pgd_acc <= 0.2  # ... the gradient direction does
    assert pgd_acc <= noise_acc - 0.6
    # a step shorter than eps is not blown up to the sphere: the projection only ever shrinks
    short = pgd(digits.model, x, Untargeted(y), eps=eps, norm="l2", steps=1, step_size=0.1, random_start=False)
    assert (short.distance <= 0.1 + 1e-5).all() and short.distance.median() > 0.05


def test_norm_setting_sets_the_instance_norm():
    assert PGD.norm == "linf" and PGD().norm == "linf"
    assert PGD(norm="l2").norm == "l2" and PGD.norm == "linf"  # the instance overrides, the class is untouched
    assert FGSM.norm == "linf"
    assert PGD(norm="l2", eps=3.0).eps == 3.0  # l2 budgets above 1 are normal (the l2 diameter is sqrt(D))


def test_targeted_pgd_reaches_the_target(digits):
    x, y = digits.correct(64)
    target = (y + 1) % 10
    for loss in ("ce", "margin"):
        r = pgd(digits.model, x, Targeted(target), eps=0.3, steps=20, loss=loss)
        with torch.no_grad():
            hit = (digits.model(r.x_adv).argmax(1) == target).float().mean()
        assert hit >= 0.9, loss
        assert torch.equal(r.success, digits.model(r.x_adv).argmax(1) == target)
    f = FGSM(eps=0.3)(digits.model, x, Targeted(target))
    with torch.no_grad():  # one step descending the target's loss makes the target likelier, not the true class
        p_clean = digits.model(x).softmax(1).gather(1, target[:, None]).mean()
        p_adv = digits.model(f.x_adv).softmax(1).gather(1, target[:, None]).mean()
    assert p_adv > p_clean + 0.1


def test_margin_loss_also_works(digits):
    x, y = digits.correct(64)
    r = pgd(digits.model, x, Untargeted(y), eps=0.3, loss="margin")
    assert accuracy(digits.model, r.x_adv, y) <= 0.05


def test_random_start_follows_the_seed_only(digits):
    x, y = digits.correct(32)
    state = torch.get_rng_state()
    a = pgd(digits.model, x, Untargeted(y), eps=0.1, steps=3, seed=4)
    assert torch.equal(state, torch.get_rng_state())
    b = pgd(digits.model, x, Untargeted(y), eps=0.1, steps=3, seed=4)
    assert torch.equal(a.x_adv, b.x_adv)
    c = pgd(digits.model, x, Untargeted(y), eps=0.1, steps=3, seed=5)
    assert not torch.equal(a.x_adv, c.x_adv)
    d = pgd(digits.model, x, Untargeted(y), eps=0.1, steps=3, norm="l2", seed=4)
    assert torch.equal(d.x_adv, pgd(digits.model, x, Untargeted(y), eps=0.1, steps=3, norm="l2", seed=4).x_adv)
    assert torch.equal(state, torch.get_rng_state())
    # without a random start PGD is deterministic I-FGSM: the seed does not matter
    e = pgd(digits.model, x, Untargeted(y), eps=0.1, steps=3, random_start=False, seed=4)
    f = pgd(digits.model, x, Untargeted(y), eps=0.1, steps=3, random_start=False, seed=5)
    assert torch.equal(e.x_adv, f.x_adv)


@pytest.mark.parametrize("bad", [{"eps": 0}, {"eps": 2}, {"eps": -0.1}, {"steps": 0}, {"steps": 2.5},
                                 {"norm": "l1"}, {"loss": "x"}, {"step_size": 0}, {"random_start": "yes"},
                                 {"early_stop": 1}])
def test_invalid_pgd_settings_name_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        PGD(**bad)


@pytest.mark.parametrize("bad", [{"eps": 0}, {"eps": 2}, {"loss": "x"}])
def test_invalid_fgsm_settings_name_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        FGSM(**bad)


def test_accuracy_does_not_rise_with_eps(digits):
    x, y = digits.correct(128)
    accs = [accuracy(digits.model, pgd(digits.model, x, Untargeted(y), eps=eps).x_adv, y)
            for eps in (0.05, 0.1, 0.2, 0.3)]
    assert all(a >= b for a, b in itertools.pairwise(accs)), accs
    assert accs[0] - accs[-1] >= 0.5, accs  # and it is a real range, not a flat line


def test_early_stop_freezes_adversarial_images_and_counts_their_queries(digits):
    x, y = digits.correct(64)
    full = pgd(digits.model, x, Untargeted(y), eps=0.3, steps=10)
    early = pgd(digits.model, x, Untargeted(y), eps=0.3, steps=10, early_stop=True)
    assert early.success.all()
    assert (early.queries >= 1).all() and (early.queries <= 10).all()
    assert early.queries.float().mean() < 6 and (full.queries == 10).all()
    assert ((early.x_adv - x).abs().amax(dim=(1, 2, 3)) <= 0.3 + 1e-6).all()


def test_per_image_budgets_in_the_functional_form(digits):
    x, y = digits.correct(48)
    eps = torch.tensor([0.0, 0.05, 0.3]).repeat(16)  # (48,)
    x_adv = pgd_linf(digits.model, x, y, eps, 10, 2.5 * eps / 10, seed=0)
    linf = (x_adv - x).flatten(1).abs().amax(1)
    assert (linf <= eps + 1e-6).all()
    assert (linf[eps == 0] == 0).all()
    with torch.no_grad():
        wrong = digits.model(x_adv).argmax(1) != y
    assert wrong[eps == 0.3].float().mean() >= 0.9 and wrong[eps == 0.05].float().mean() < 0.5
    # the class is the functional form with a filled tensor
    r = pgd(digits.model, x, Untargeted(y), eps=0.3)
    filled = pgd_linf(digits.model, x, y, torch.full((48,), 0.3), 10, torch.full((48,), 0.075),
                      seed=0)
    torch.testing.assert_close(filled, r.x_adv)
    # called from a no_grad context (e.g. inside a training step's bookkeeping) it still attacks
    with torch.no_grad():
        x_l2 = pgd_l2(digits.model, x, y, 1.5, 10, 0.375, seed=0)
    assert ((x_l2 - x).flatten(1).norm(dim=1) <= 1.5 + 1e-5).all()
    assert accuracy(digits.model, x_l2, y) <= 0.1
    with pytest.raises(ValueError, match="eps"):
        pgd_linf(digits.model, x, y, torch.zeros(3), 1, 0.1)


def test_works_under_the_models_bf16_autocast(digits):
    x, y = digits.correct(64)
    digits.model.autocast_dtype = torch.bfloat16
    try:
        r = pgd(digits.model, x, Untargeted(y), eps=0.3)
        acc = accuracy(digits.model, r.x_adv, y)
    finally:
        digits.model.autocast_dtype = None
    assert r.x_adv.dtype == torch.float32
    assert ((r.x_adv - x).abs().amax(dim=(1, 2, 3)) <= 0.3 + 1e-6).all()
    assert acc <= 0.1


@pytest.mark.gpu  # `make test-gpu` on a CUDA machine; CI has none
def test_runs_on_the_gpu(digits):
    import copy

    model = copy.deepcopy(digits.model).cuda()
    x, y = digits.correct(64)
    gpu = pgd(model, x.cuda(), Untargeted(y.cuda()), eps=0.3)
    assert gpu.x_adv.is_cuda and gpu.queries.is_cuda
    assert ((gpu.x_adv.cpu() - x).abs().amax(dim=(1, 2, 3)) <= 0.3 + 1e-6).all()
    assert accuracy(model, gpu.x_adv, y.cuda()) <= 0.05
    state = torch.get_rng_state(), torch.cuda.get_rng_state()
    pgd(model, x.cuda(), Untargeted(y.cuda()), eps=0.3, norm="l2")
    assert torch.equal(state[0], torch.get_rng_state()) and torch.equal(state[1], torch.cuda.get_rng_state())


def test_registered_as_white_box_attacks_for_classification_and_segmentation():
    known = registry.attacks()
    for name, cls in (("fgsm", FGSM), ("pgd", PGD)):
        info = known[name]
        assert info.cls is cls and info.threat == "white-box" and info.tasks == {"classification", "segmentation"}
        assert info.summary
