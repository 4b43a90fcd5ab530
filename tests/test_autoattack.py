"""APGD, APGD-T, Square and the `standard` sequence (Croce & Hein, ICML 2020; Andriushchenko et al.,
ECCV 2020) against their reference implementation in torchattacks 3.5.1 (a test dependency only), on the
lab's Fashion-MNIST CNN: at least as strong on the same images, inside the threat model, and the
sequence's bookkeeping equal to a recomputation."""
from __future__ import annotations

import json

import pytest
import torch
import torchattacks  # the `test` extra (make test installs it): a missing reference fails, it does not skip

from advlab.attacks.apgd import APGD, APGDT, Schedule, dlr_loss, dlr_targeted_loss
from advlab.attacks.square import Square, p_selection
from advlab.cli.main import main
from advlab.core.criteria import Untargeted

FASHION_MODEL = ["--model", "advlab.zoo.smallnets:fashion_cnn", "--mean", "0.5", "--std", "0.5", "--input-size", "28",
                 "--data", "fashion-mnist:test"]


def robust(model, x_adv: torch.Tensor, y: torch.Tensor) -> int:
    with torch.no_grad():
        return int((model(x_adv).argmax(1) == y).sum())


def test_dlr_is_invariant_to_a_shift_and_a_rescaling_of_the_logits():
    z = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))
    y, t = torch.arange(16) % 10, (torch.arange(16) + 3) % 10
    for loss in (lambda v: dlr_loss(v, y), lambda v: dlr_targeted_loss(v, y, t)):
        assert torch.allclose(loss(7.5 * z + 3.0), loss(z), atol=1e-5)
    assert bool((dlr_loss(z, z.argmax(1)) < 0).all())  # right: below 0; fooled: above
    assert bool((dlr_loss(z, z.argmin(1)) > 0).all())


def test_the_step_size_checkpoints_follow_the_paper():
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), at 100 iterations."""
    schedule, at = Schedule.of(100), []
    length, position = schedule.first, 0
    while position + length <= 100:
        position += length
        at.append(position)
        length = max(length - schedule.shrink, schedule.shortest)
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    paper = [round(100 * v) for v in p[1:]]
    assert at == paper == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.5)])
def test_apgd_is_at_least_as_strong_as_torchattacks_inside_the_ball(fashion, norm, eps):
    x, y = fashion.correct(200)
    for loss in ("ce", "dlr"):
        ours = APGD(eps=eps, norm=norm, steps=100, loss=loss)(fashion.model, x, Untargeted(y), seed=0)
        delta = (ours.x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= eps * (1 + 1e-5)
        assert int((~ours.success).sum()) == robust(fashion.model, ours.x_adv, y)  # the verdicts are the model's
        theirs = torchattacks.APGD(fashion.model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=100,
                                   n_restarts=1, loss=loss, seed=0)(x, y)
        left_ours, left_theirs = int((~ours.success).sum()), robust(fashion.model, theirs, y)
        assert left_ours <= left_theirs + 1, (loss, left_ours, left_theirs)  # 0.5 points of 200
        assert left_ours < 0.6 * len(y)  # the attack works at all: most images fall


def test_apgd_t_tries_the_next_most_likely_classes_and_matches_torchattacks(fashion):
    x, y = fashion.correct(60)
    eps = 0.06
    ours = APGDT(eps=eps, steps=50, targets=3)(fashion.model, x, Untargeted(y), seed=0)
    theirs = torchattacks.APGDT(fashion.model, norm="Linf", eps=eps, steps=50, n_restarts=1, n_classes=10, seed=0)
    theirs.n_target_classes = 3
    left_theirs = robust(fashion.model, theirs(x, y), y)
    assert int((~ours.success).sum()) <= left_theirs + 1
    one = APGDT(eps=eps, steps=50, targets=1)(fashion.model, x, Untargeted(y), seed=0)
    assert bool((one.success <= ours.success).all())  # more targets only add (the first target's run is the same)
    assert int(ours.queries.max()) <= 1 + 3 * 51 and int(one.queries.max()) <= 1 + 51


def test_square_stays_in_the_ball_and_fools_without_gradients(fashion):
    x, y = fashion.correct(40)
    # shares fooled after 300 queries; torchattacks' Square left 27 of 46 at l2 1.5, ours 28 (bench numbers)
    for norm, eps, share in (("linf", 0.1, 0.4), ("l2", 1.5, 0.25)):
        result = Square(eps=eps, norm=norm, max_queries=300)(fashion.model, x, Untargeted(y), seed=0)
        delta = (result.x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= eps * (1 + 1e-5)
        assert int((~result.success).sum()) == robust(fashion.model, result.x_adv, y)
        assert float(result.success.float().mean()) > share, norm  # a random search, without any gradient
        assert int(result.queries.max()) <= 300 and int(result.queries[result.success].min()) >= 1
    assert p_selection(0.8, 0, 5000) == 0.8 and p_selection(0.8, 5000, 5000) == pytest.approx(0.8 / 512)


def test_square_is_at_least_as_strong_as_torchattacks(fashion):
    x, y = fashion.correct(60)
    ours = Square(eps=0.08, norm="linf", max_queries=200)(fashion.model, x, Untargeted(y), seed=0)
    theirs = torchattacks.Square(fashion.model, norm="Linf", eps=0.08, n_queries=200, n_restarts=1, p_init=0.8,
                                 loss="margin", resc_schedule=True, seed=0)(x, y)
    assert int((~ours.success).sum()) <= robust(fashion.model, theirs, y) + 2  # a random search: 2 of 60


def test_standard_runs_the_sequence_on_the_survivors_and_fills_the_matrix(fashion, in_tmp):
    assert main(["attack", "--method", "standard", "--eps", "0.06", "--steps", "20", "--set", "square_queries=60",
                 "-n", "30", *FASHION_MODEL, "--weights", str(fashion.weights), "--out", "run"]) == 0
    results = json.loads((in_tmp / "run" / "results.json").read_text())
    row = results["attacks"][0]
    parts = row["components"]
    assert [p["attack"] for p in parts] == ["apgd-ce", "apgd-t", "fab-t", "square"] and "fab_t" not in row
    clean = sum(s["clean_pred"] == s["label"] for s in row["samples"])
    fooled = sum(s["success"] for s in row["samples"])
    assert sum(p["fooled"] for p in parts) == fooled
    assert parts[-1]["robust_accuracy"] == pytest.approx((clean - fooled) / 30)
    rows = {r["attack"]: r["accuracy"][0] for r in results["robustness"]["matrices"][0]["rows"]}
    assert rows["standard: apgd-ce"] == pytest.approx(parts[0]["robust_accuracy"])
    assert rows["standard: apgd-ce + apgd-t"] == pytest.approx(parts[1]["robust_accuracy"])
    assert rows["standard: apgd-ce + apgd-t + fab-t"] == pytest.approx(parts[2]["robust_accuracy"])
    assert rows["standard"] == rows["worst case"] == pytest.approx(parts[3]["robust_accuracy"])
    assert fooled > 0


def test_square_finding_what_the_gradients_missed_is_flagged(fashion, in_tmp):
    """Behind bit-depth reduction without BPDA the input gradient is zero, so APGD cannot move; Square
    still fools images, and the run says the gradients are masked (AutoAttack's own check)."""
    assert main(["defend", "--defense", "bit-depth:bits=2:bpda=false", "--attacks", "standard", "--eps", "0.15",
                 "--steps", "5", "--set", "square_queries=100", "-n", "20", *FASHION_MODEL, "--weights",
                 str(fashion.weights), "--out", "run"]) == 0
    results = json.loads((in_tmp / "run" / "results.json").read_text())
    adaptive = next(r for r in results["attacks"] if r["setting"].startswith("defended") and "adaptive" in
                    r["setting"])
    gradient = sum(part["fooled"] for part in adaptive["components"][:3])  # APGD-CE, APGD-T, FAB-T
    square = adaptive["components"][3]["fooled"]
    assert square > gradient
    assert any(w["check"] == "gradient-masking" and "square (score-based)" in w["message"]
               for w in results["warnings"])


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_fab_s_projection_is_the_minimal_step_onto_the_hyperplane_inside_the_box(norm):
    """The step reaches the hyperplane, stays in [0, 1], and is no longer than the reference's (the FAB paper's
    Props. 2 and 3, as torchattacks implements them) nor than any other feasible step we try."""
    from torchattacks.attacks.fab import projection_l2, projection_linf

    from advlab.attacks.fab import project_onto_hyperplane

    gen = torch.Generator().manual_seed(0)
    p, w = torch.rand(32, 300, generator=gen), torch.randn(32, 300, generator=gen)
    w[:, :50] = 0.0  # coordinates that do not matter stay put
    b = (w * torch.rand(32, 300, generator=gen)).sum(1)
    d = project_onto_hyperplane(p, w, b - (w * p).sum(1), norm)
    assert torch.allclose((w * (p + d)).sum(1), b, atol=1e-4)
    assert float((p + d).min()) >= 0.0 and float((p + d).max()) <= 1.0 and bool((d[:, :50] == 0).all())
    size = (lambda v: v.abs().amax(1)) if norm == "linf" else (lambda v: v.norm(dim=1))
    reference = (projection_linf if norm == "linf" else projection_l2)(p.clone(), w.clone(), b.clone())
    assert bool((size(d) <= size(reference) * (1 + 1e-4)).all())
    other = (torch.rand(32, 300, generator=gen) - p) * (w != 0)  # a random direction, scaled onto the plane
    scale = (b - (w * p).sum(1)) / (w * other).sum(1)
    feasible = ((p + scale[:, None] * other) >= 0).all(1) & ((p + scale[:, None] * other) <= 1).all(1)
    assert bool((size(d)[feasible] <= size(scale[:, None] * other)[feasible] * (1 + 1e-5)).all())
    unreachable = project_onto_hyperplane(p[:1], w[:1], torch.tensor([1e6]), norm)  # every coordinate to its bound
    assert bool(((p[:1] + unreachable)[:, 50:] * (1 - (p[:1] + unreachable)[:, 50:]) == 0).all())


@pytest.mark.parametrize("norm,eps", [("linf", 0.06), ("l2", 1.0)])
def test_fab_t_is_at_least_as_strong_as_torchattacks_multi_targeted_fab_inside_the_ball(fashion, norm, eps):
    from advlab.attacks.fab import FABT

    x, y = fashion.correct(60)
    ours = FABT(eps=eps, norm=norm, steps=30, targets=3)(fashion.model, x, Untargeted(y), seed=0)
    delta = (ours.x_adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps * (1 + 1e-5)  # its bound: the clean image where nothing lies within eps
    assert int((~ours.success).sum()) == robust(fashion.model, ours.x_adv, y)
    fab = torchattacks.FAB(fashion.model, norm="Linf" if norm == "linf" else "L2", eps=eps, steps=30, n_restarts=1,
                           multi_targeted=True, n_classes=4, seed=0)  # n_classes - 1 = 3 targets
    adv = fab(x, y)
    theirs_delta = (adv - x).flatten(1)
    theirs_size = theirs_delta.abs().amax(1) if norm == "linf" else theirs_delta.norm(dim=1)
    with torch.no_grad():
        left_theirs = int(((fashion.model(adv).argmax(1) == y) | (theirs_size > eps * (1 + 1e-5))).sum())
    assert int((~ours.success).sum()) <= left_theirs  # the same algorithm: not one image more survives
    assert 0 < int(ours.success.sum()) < len(y)  # the budget is one where the attack decides something


def test_fab_t_gives_each_image_the_same_result_alone_or_in_a_batch(fashion):
    from advlab.attacks.fab import FABT

    x, y = fashion.correct(12)
    attack = FABT(eps=0.06, steps=15, targets=2, restarts=2)
    whole = attack(fashion.model, x, Untargeted(y), seed=3)
    parts = [attack(fashion.model, x[i:i + 5], Untargeted(y[i:i + 5]), seed=3) for i in range(0, 12, 5)]
    assert torch.equal(whole.success, torch.cat([p.success for p in parts]))
    assert torch.allclose(whole.x_adv, torch.cat([p.x_adv for p in parts]), atol=1e-6)


class NoisyInput(torch.nn.Module):
    """A randomised defense: Gaussian noise (sigma 0.1) added to the input of every forward pass."""

    def __init__(self, model: torch.nn.Module, sigma: float = 0.1) -> None:
        super().__init__()
        self.model, self.sigma = model, sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x + self.sigma * torch.randn_like(x)).clamp(0.0, 1.0))


def accuracy_over_predictions(model, x: torch.Tensor, y: torch.Tensor, k: int = 10) -> float:
    """A randomised model's accuracy on x, averaged over k predictions per image (the same k noise draws for
    every call: the global generator is reseeded)."""
    torch.manual_seed(1234)
    with torch.no_grad():
        return sum(float((model(x).argmax(1) == y).float().mean()) for _ in range(k)) / k


def test_standard_runs_autoattack_s_rand_version_on_a_randomised_model(fashion):
    """Two passes differ, so `standard` runs APGD-CE and APGD-DLR with EOT (AutoAttack's version='rand') and
    says so; over 10 predictions per image its robust accuracy is at or below torchattacks'
    AutoAttack(version='rand') as shipped (10 iterations, EOT over 20 passes) on the same images."""
    from advlab.attacks.standard import Standard
    from advlab.core.randomness import passes_differ

    noisy = NoisyInput(fashion.model).eval()
    x, y = fashion.correct(40)
    assert passes_differ(noisy, x) and not passes_differ(fashion.model, x)
    torch.manual_seed(0)
    ours = Standard(eps=0.05, steps=10, eot_samples=20)(noisy, x, Untargeted(y), seed=0)
    assert set(ours.per_image["version"].tolist()) == {1}  # the rand version's index
    assert set(ours.per_image["component"].tolist()) <= {-1, 0, 1}  # APGD-CE, APGD-DLR: no FAB-T, no Square
    torch.manual_seed(0)
    theirs = torchattacks.AutoAttack(noisy, norm="Linf", eps=0.05, version="rand", n_classes=10, seed=0)(x, y)
    ours_acc, theirs_acc = accuracy_over_predictions(noisy, ours.x_adv, y), accuracy_over_predictions(noisy, theirs, y)
    clean = accuracy_over_predictions(noisy, x, y)
    assert ours_acc <= theirs_acc + 1 / len(y), (ours_acc, theirs_acc)
    assert ours_acc < clean - 0.2  # the attack bites through the noise
    fixed = Standard(eps=0.05, steps=5, targets=2, square_queries=20)(fashion.model, x[:8], Untargeted(y[:8]), seed=0)
    assert set(fixed.per_image["version"].tolist()) == {0}  # a deterministic model keeps the standard version


def test_square_and_fab_t_with_eot_average_their_passes_and_count_every_one(fashion):
    from advlab.attacks.fab import FABT

    noisy = NoisyInput(fashion.model).eval()
    x, y = fashion.correct(20)
    torch.manual_seed(0)
    result = Square(eps=0.08, max_queries=40, eot_samples=4)(noisy, x, Untargeted(y), seed=0)
    assert int(result.queries.max()) <= 4 * 40 and int(result.queries.min()) >= 4  # each query is 4 passes
    assert int(result.queries.max()) > 4
    torch.manual_seed(0)
    fab = FABT(eps=0.08, steps=5, targets=1, eot_samples=3)(noisy, x, Untargeted(y), seed=0)
    assert bool((fab.queries % 3 == 1).all())  # the clean ranking pass, then 3 passes per check or linearisation
    assert int(fab.queries.max()) >= 1 + 3 * 6 and int(fab.success.sum()) > 0


def test_a_randomised_model_is_measured_over_k_predictions_per_image(fashion):
    """The run finds the randomness: each image's verdict is its share of 10 right predictions, the matrix
    averages them (so it takes values between the 1/N steps), the row reports the mean accuracy over the rounds
    and its spread, and `standard` ran the rand version."""
    import advlab

    noisy = NoisyInput(fashion.model, sigma=0.15).eval()
    x, y = fashion.correct(16)
    torch.manual_seed(0)
    ev = advlab.evaluate(noisy, (x, y), attacks="standard", threat="linf:0.05", steps=5, eot_samples=4, quiet=True)
    row = ev.attacks[0]
    predictions = row.measures["predictions"]
    assert predictions["k"] == 10 and predictions["accuracy_std"] > 0 and "share" in predictions["rule"]
    assert row.measures["version"] == "rand"
    worst = ev.robust_accuracy
    rows = {r.attack: r.accuracy[0] for r in ev.matrices[0].rows}
    assert abs(worst * 16 * 10 - round(worst * 16 * 10)) < 1e-4  # a mean of shares of 10 predictions
    assert worst == pytest.approx(rows["standard"])  # its components' rows never undercut the whole sequence
    assert rows["standard: apgd-ce"] >= rows["standard"] - 1e-6
    assert worst < ev.clean_accuracy
    html = ev.report.read_text()
    assert "A randomised model (two passes on the same images differ)" in html and "Over 10 predictions" in html
    plain = advlab.evaluate(fashion.model, (x[:4], y[:4]), attacks="fgsm", threat="linf:0.05", quiet=True)
    assert "predictions" not in plain.attacks[0].measures  # a deterministic model: one prediction, 1/0 verdicts
