"""Criteria defined on outputs: per-target margins, the fooled share against a threshold, losses
to ascend, for one target per image (classification) and dense per-pixel targets with void pixels;
gradient attacks run on dense outputs through them unchanged; plugins run only on declared tasks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.attacks.gradient import PGD
from advlab.core.criteria import IGNORE, Targeted, Untargeted
from advlab.core.errors import AdvlabError
from advlab.core.registry import PluginInfo


def test_classification_margins_agree_with_top1():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 1.5, 4.0]])  # (N=3, K=3)
    labels = torch.tensor([0, 0, 2])
    crit = Untargeted(labels)
    margins = crit.margins(logits)  # (3, 1)
    assert margins.shape == (3, 1)
    assert torch.equal(margins[:, 0] > 0, logits.argmax(1) != labels)
    assert torch.allclose(margins[:, 0], torch.tensor([-1.0, 3.0, -2.5]))
    assert torch.equal(crit.is_adversarial(logits), torch.tensor([False, True, False]))
    target = Targeted(torch.tensor([1, 1, 1]))
    assert torch.equal(target.is_adversarial(logits), torch.tensor([False, True, False]))
    assert torch.allclose(target.margins(logits)[:, 0], torch.tensor([-1.0, 2.0, -2.5]))
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(crit.loss(logits), ce) and torch.allclose(target.loss(logits), -torch.nn.functional
                                                                   .cross_entropy(logits, target.labels,
                                                                                  reduction="none"))


def test_class_255_is_a_real_class_for_one_target_per_image():
    logits = torch.zeros(2, 1000)
    logits[:, 255] = 5.0
    crit = Untargeted(torch.tensor([255, 3]))
    assert torch.equal(crit.is_adversarial(logits), torch.tensor([False, True]))
    assert crit.valid().all() and torch.isfinite(crit.loss(logits)).all()


def test_dense_targets_with_void_pixels_and_a_threshold():
    k, h, w = 3, 4, 5
    labels = torch.zeros(2, h, w, dtype=torch.long)  # every pixel class 0 ...
    labels[0, 0, :] = IGNORE  # ... but the first row of image 0 is void
    logits = torch.zeros(2, k, h, w)
    logits[:, 0] = 1.0  # predicted class 0 everywhere
    logits[0, 1, :2, :] = 2.0  # image 0: rows 0-1 now class 1 (row 0 is void: only row 1 counts)
    logits[1, 2] = 3.0  # image 1: everything class 2
    crit = Untargeted(labels)
    assert crit.margins(logits).shape == (2, h * w)
    share = crit.fooled_share(logits)
    assert share[0] == pytest.approx(5 / 15) and share[1] == 1.0  # 5 of 15 valid pixels of image 0
    assert torch.equal(crit.is_adversarial(logits), torch.tensor([False, True]))
    loose = Untargeted(labels, threshold=0.3)
    assert torch.equal(loose.is_adversarial(logits), torch.tensor([True, True]))
    assert torch.isinf(crit.margins(logits)[0, :w]).all()  # void targets never count as fooled
    loss = crit.loss(logits)  # mean CE over valid pixels only
    per_pixel = torch.nn.functional.cross_entropy(logits, labels, reduction="none", ignore_index=IGNORE)
    assert loss[0] == pytest.approx(float(per_pixel[0].sum() / 15))
    assert torch.equal(crit.subset(torch.tensor([1, 1])).labels, labels[[1, 1]])


def test_pgd_attacks_a_dense_model_through_the_criterion():
    """FGSM/PGD only call the criterion, so a per-pixel classifier is attacked unchanged."""
    torch.manual_seed(0)
    net = nn.Conv2d(3, 4, kernel_size=3, padding=1).eval()  # (N, 3, H, W) -> (N, 4, H, W) logits per pixel
    x = torch.rand(3, 3, 12, 12)
    with torch.no_grad():
        clean = net(x).argmax(1)  # (N, H, W)
    result = PGD(eps=0.3, steps=20)(net, x, Untargeted(clean), seed=0)
    noise = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).sign()).clamp(0, 1)
    with torch.no_grad():
        still = float((net(result.x_adv).argmax(1) == clean).float().mean())
        still_noise = float((net(noise).argmax(1) == clean).float().mean())
    assert still < 0.25 and still_noise > still + 0.3  # most pixels flipped, far more than by noise of the same size
    assert ((result.x_adv - x).abs().amax(dim=(1, 2, 3)) <= 0.3 + 1e-6).all()


def test_a_plugin_runs_only_on_the_tasks_it_declares(digits):
    from advlab.data.image_set import ImageSet
    from advlab.run.runner import check_task
    from advlab.tasks import Subject, get_task

    task = get_task("classification")
    data = ImageSet(digits.x_test[:2], digits.y_test[:2], ["a", "b"], "test", "ground-truth")
    subject = Subject(digits.model, task, data, None, digits.y_test[:2], None)
    check_task(PluginInfo("pgd", "attack", PGD, meta={"threat": "white-box", "tasks": {"classification"}}), subject)
    dense_only = PluginInfo("dag", "attack", PGD, meta={"threat": "white-box", "tasks": {"segmentation", "detection"}})
    with pytest.raises(AdvlabError, match="attack dag does not support the classification task"):
        check_task(dense_only, subject)
