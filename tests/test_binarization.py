"""The binarization test (Zimmermann, Brendel, Tramèr & Carlini, "Increasing Confidence in Adversarial Robustness
Evaluations", NeurIPS 2022; pass rule: the attack fools at least 95% of the binarized models): the binarized
models have their adversarial example inside the threat model and their image outside it, an image gets the same
model in any batch, and the test tells evaluations apart: `standard` passes on the plain and the adversarially
trained Fashion CNN and through JPEG attacked with BPDA; PGD through bit depth without BPDA, and PGD with a step far
too small, fail it, with a warning and a FAILED line in the report."""
from __future__ import annotations

import pytest
import torch

import advlab
from advlab.attacks.apgd import APGDT, dlr_loss, dlr_targeted_loss
from advlab.attacks.gradient import PGD
from advlab.cli.main import main
from advlab.core.binarized import ETA, binarize, boundary_point, head_of, inner_count, inner_points, separated
from advlab.core.criteria import Untargeted
from advlab.core.rng import image_keys
from advlab.core.threat import ThreatModel
from advlab.run.binarization import PASS_RATE

LINF = ThreatModel("linf", 0.1)


def binarized_of(model, x: torch.Tensor, threat: ThreatModel):
    head = head_of(model, 10)
    return binarize(model, head, x, threat, seed=0, inner=inner_count(head.in_features), batch_size=256)


@pytest.mark.parametrize("threat", [LINF, ThreatModel("l2", 1.5)], ids=["linf", "l2"])
def test_each_binarized_model_has_its_adversarial_inside_the_ball_and_its_neighbourhood_outside(fashion, threat):
    x, _ = fashion.correct(200)
    x = x[separated(x, threat, 20)]
    assert len(x) == 20
    binarized, valid = binarized_of(fashion.model, x, threat)
    assert valid.float().mean() >= 0.9  # the readouts separate their points on nearly every image
    kept = x[valid]
    keys = image_keys(kept, 0)
    edge = boundary_point(kept, keys, threat)
    size = (edge - kept).flatten(1).abs().amax(1) if threat.norm == "linf" else (edge - kept).flatten(1).norm(dim=1)
    assert bool(threat.within(size).all()) and bool((size > 0.9 * threat.eps).all())  # at eps, up to the box
    with torch.no_grad():
        assert bool((binarized(edge).argmax(1) == 1).all())  # the adversarial example the attack must find
        assert bool((binarized(kept).argmax(1) == 0).all())  # the image itself is class 0
        index = torch.full((len(kept),), 7)  # an inner training point of every image: class 0 as well
        assert bool((binarized(inner_points(kept, keys, index, threat)).argmax(1) == 0).all())
    # the inner points lie within eta * eps: the gap between them and the adversarial region is the test's
    inner = inner_points(kept, keys, index, threat)
    spread = (inner - kept).flatten(1).abs().amax(1) if threat.norm == "linf" else (inner - kept).flatten(1).norm(dim=1)
    assert bool((spread <= ETA * threat.eps + 1e-6).all())


def test_an_image_gets_the_same_binarized_model_alone_or_in_a_batch(fashion):
    x, _ = fashion.correct(40)
    x = x[separated(x, LINF, 6)]
    together, _ = binarized_of(fashion.model, x, LINF)
    alone, _ = binarized_of(fashion.model, x[3:4], LINF)
    edge = boundary_point(x[3:4], image_keys(x[3:4], 0), LINF)
    probe = torch.cat([x[3:4], edge, (x[3:4] + 0.05).clamp(0, 1)])  # (3, 1, 28, 28): all nearest to image 3
    with torch.no_grad():
        assert torch.allclose(together(probe), alone(probe), rtol=1e-4, atol=1e-5)


def test_dlr_losses_become_the_logit_difference_on_two_classes(fashion):
    logits = torch.tensor([[2.0, -1.0], [0.5, 1.5]])
    labels = torch.tensor([0, 0])
    assert torch.allclose(dlr_loss(logits, labels), torch.tensor([-3.0, 1.0]))
    assert torch.allclose(dlr_targeted_loss(logits, labels, torch.tensor([1, 1])), torch.tensor([-3.0, 1.0]))
    x, _ = fashion.correct(60)
    x = x[separated(x, LINF, 20)]
    binarized, valid = binarized_of(fashion.model, x, LINF)
    kept = x[valid]
    result = APGDT(eps=0.1, steps=50)(binarized, kept, Untargeted(torch.zeros(len(kept), dtype=torch.long)), seed=0)
    assert result.success.float().mean() >= PASS_RATE  # APGD-T runs on two classes and finds the known adversarial


def binarization_by_row(evaluation) -> dict[tuple[str, str, str | None], object]:
    return {(row.method, row.setting, row.defense): test for row, test in evaluation.binarization_tests}


@pytest.mark.parametrize("which", ["plain", "adversarially trained"])
def test_standard_passes_on_the_plain_and_the_adversarially_trained_cnn(fashion, fashion_madry, which):
    model = fashion.model if which == "plain" else fashion_madry.model
    evaluation = advlab.evaluate(model, (fashion.x_test[:40], fashion.y_test[:40]), attacks="standard",
                                 threat="linf:0.1", binarization_test=20, square_queries=300, quiet=True)
    (row, test), = evaluation.binarization_tests
    assert row.method == "standard" and test.threat.label == "linf eps 0.1" and test.pass_rate == PASS_RATE
    assert test.n >= 18 and test.setup_failed == 20 - test.n
    assert test.passed and test.success_rate >= PASS_RATE
    assert not [w for w in evaluation.warnings if w.check == "binarization-test"]


def test_the_test_passes_through_jpeg_with_bpda_and_fails_a_step_far_too_small(fashion_madry):
    evaluation = advlab.evaluate(fashion_madry.model, (fashion_madry.x_test[:40], fashion_madry.y_test[:40]),
                                 attacks=["standard", PGD(eps=0.1, steps=10, step_size=1e-4)],
                                 threat="linf:0.1", defenses="jpeg", binarization_test=20, square_queries=300,
                                 quiet=True)
    tests = binarization_by_row(evaluation)
    for setting, defense in (("plain model", None), ("defended model (adaptive)", "jpeg")):
        assert tests[("standard", setting, defense)].passed
        weak = tests[("pgd", setting, defense)]
        assert weak.passed is False and weak.success_rate < 0.2  # a step of 1e-4 never leaves the inner region
    failed = [w for w in evaluation.warnings if w.check == "binarization-test"]
    assert len(failed) == 2 and all("pgd failed the binarization test" in w.message for w in failed)
    page = evaluation.report.read_text()
    assert page.count(">FAILED<") == 2 and page.count(">passed<") == 2


def test_pgd_through_bit_depth_without_bpda_fails_and_with_bpda_passes(fashion_madry, tmp_path):
    config = tmp_path / "bits.yaml"
    config.write_text(f"""
model: {{name: advlab.zoo.smallnets:fashion_cnn, weights: {fashion_madry.weights}, mean: [0.5], std: [0.5],
        input_size: 28}}
data: {{source: "fashion-mnist:test", n: 40}}
binarization_test: 20
attacks: [{{method: pgd, eps: 0.1, steps: 20}}]
defenses: [{{method: bit-depth, bits: 2, bpda: false}}, {{method: bit-depth, bits: 2}}]
""")
    assert main(["run", str(config), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    evaluation = advlab.load(tmp_path / "run")
    assert binarization_by_row(evaluation)[("pgd", "plain model", None)].passed
    by_variant = {row.defense_variant: test for row, test in evaluation.binarization_tests if row.defense}
    assert by_variant["2 bits"].passed  # BPDA: the gradient of the identity finds the known adversarials
    assert by_variant["2 bits, no BPDA"].passed is False  # the zero gradient of the rounding finds none
    assert by_variant["2 bits, no BPDA"].success_rate < 0.2


def test_the_test_is_refused_up_front_where_it_cannot_apply(run_error, in_tmp):
    from advlab.zoo.segnet import WEIGHTS

    message = run_error("attack", "--method", "pgd", "--model", "advlab.zoo.smallnets:fashion_cnn", "--binarization-test=-3")
    assert "binarization_test (--binarization-test) is a number of images" in message
    message = run_error("attack", "--method", "pgd", "--model", "advlab.zoo.segnet:fashion_segnet", "--weights",
                        str(WEIGHTS), "--mean", "0.5", "--std", "0.5", "--data", "fashion-scenes:test", "-n", "2",
                        "--binarization-test", "5")
    assert "replaces a classifier's head" in message and "segmentation" in message
    assert not any(in_tmp.iterdir())  # refused before anything was written
