"""Each sanity check fires on a model or a result built to trigger it, and a sound evaluation raises none."""
from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.gradient import PGD
from advlab.core.criteria import Untargeted
from advlab.core.defense import Defended
from advlab.core.schema import ADAPTIVE, NO_DEFENSE, NON_ADAPTIVE
from advlab.defenses.transforms import BitDepth
from advlab.run.robustness import Column, Entry, Ledger
from advlab.run.sanity import probe, result_checks
from advlab.tasks import get_task


class Noisy(nn.Module):
    """A randomised model: Gaussian noise on the input at every forward pass."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + 0.05 * torch.randn_like(x))


class Softmaxed(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(dim=1)


def checks(found: list[dict[str, str]]) -> set[str]:
    return {w["check"] for w in found}


CLASSIFICATION = get_task("classification")


def test_a_sound_model_passes_every_probe(fashion):
    x, y = fashion.correct(8)
    assert probe(fashion.model, x, y, "no defense", torch.device("cpu"), task=CLASSIFICATION) == []
    defended = Defended(fashion.model, BitDepth(bits=2)).eval()  # BPDA: a usable gradient
    assert probe(defended, x, y, "bit-depth, adaptive", torch.device("cpu"), task=CLASSIFICATION) == []


def test_each_probe_fires_on_a_model_built_to_trigger_it(fashion):
    x, y = fashion.correct(8)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    assert "randomised-model" in checks(probe(Noisy(fashion.model), x, y, "noisy", cpu, task=CLASSIFICATION))
    assert checks(probe(Softmaxed(fashion.model), x, y, "softmax", cpu, task=CLASSIFICATION)) == {"probabilities"}
    masked = checks(probe(Defended(fashion.model, BitDepth(bits=2, bpda=False)).eval(), x, y, "no bpda", cpu,
                          task=CLASSIFICATION))
    assert masked == {"masked-gradients", "unbounded-attack"}
    nan = checks(probe(Softmaxed(fashion.model), x * float("nan"), y, "nan", cpu))
    assert "masked-gradients" in nan


def _entry(correct: list[bool], *, eps: float | None = None, threat: str = "white-box", norm: str = "linf",
           dist: list[float] | None = None, method: str = "pgd") -> Entry:
    distances = {} if dist is None else {norm: torch.tensor(dist)}
    bound = (norm, eps) if eps is not None else None
    return Entry(torch.tensor(correct), distances, method, {} if eps is None else {"eps": eps}, threat, norm,
                 threat == "decision", bound=bound)


def _ledger(entries: dict[str, Entry]) -> Ledger:
    column, ledger = Column(None, None, NO_DEFENSE), Ledger()
    ledger.add_column(column, torch.ones(len(next(iter(entries.values())).correct), dtype=torch.bool))
    for label, e in entries.items():
        ledger.record(column, label, e)
    return ledger


def test_a_curve_that_rises_with_eps_or_stays_up_at_a_huge_eps_is_flagged():
    rising = _ledger({"pgd eps=0.1": _entry([False] * 8 + [True] * 2, eps=0.1),
                      "pgd eps=0.2": _entry([False] * 4 + [True] * 6, eps=0.2)})
    assert checks(result_checks(rising, [])) == {"non-monotone"}
    stuck = _ledger({"pgd eps=0.1": _entry([True] * 10, eps=0.1), "pgd eps=0.5": _entry([True] * 5 + [False] * 5,
                                                                                       eps=0.5)})
    assert checks(result_checks(stuck, [])) == {"no-zero-at-large-eps"}
    sound = _ledger({"pgd eps=0.1": _entry([True] * 5 + [False] * 5, eps=0.1),
                     "pgd eps=0.5": _entry([False] * 10, eps=0.5)})
    assert result_checks(sound, []) == []


def test_a_decision_attack_beating_the_gradient_attack_within_its_budget_is_flagged():
    pgd = _entry([True] * 10, eps=0.1)  # the gradient attack fooled nothing
    near = _entry([False] * 10, threat="decision", norm="l2", dist=[0.5] * 10, method="boundary")
    near.distances["linf"] = torch.full((10,), 0.05)  # within pgd's l_inf budget
    assert checks(result_checks(_ledger({"pgd": pgd, "boundary": near}), [])) == {"gradient-masking"}
    far = _entry([False] * 10, threat="decision", norm="l2", dist=[0.5] * 10, method="boundary")
    far.distances["linf"] = torch.full((10,), 0.3)  # needed more than pgd's budget: no finding
    assert result_checks(_ledger({"pgd": pgd, "boundary": far}), []) == []


def test_a_transfer_attack_beating_the_adaptive_one_is_flagged():
    ledger = Ledger()
    for setting, correct in ((NON_ADAPTIVE, [False] * 6 + [True] * 4), (ADAPTIVE, [True] * 10)):
        column = Column(None, "jpeg q75", setting)
        ledger.add_column(column, torch.ones(10, dtype=torch.bool))
        ledger.record(column, "pgd", _entry(correct, eps=0.1))
    found = result_checks(ledger, [])
    assert checks(found) == {"gradient-masking"} and found[0]["where"] == "jpeg q75, adaptive"


def test_a_control_as_strong_as_its_attack_is_flagged():
    row = {"method": "universal", "setting": "plain model", "defense": None, "fooling_ratio": 0.3}
    weak = {**row, "baseline": "universal", "fooling_ratio": 0.05}
    assert result_checks(Ledger(), [row, weak]) == []
    strong = {**row, "baseline": "universal", "fooling_ratio": 0.28}
    assert checks(result_checks(Ledger(), [row, strong])) == {"control-as-strong"}


def test_eot_averages_gradients_and_counts_every_pass(fashion):
    x, y = fashion.correct(6)
    one = PGD(eps=0.1, steps=3, random_start=False)(fashion.model, x, Untargeted(y))
    three = PGD(eps=0.1, steps=3, random_start=False, eot_samples=3)(fashion.model, x, Untargeted(y))
    assert torch.equal(one.x_adv, three.x_adv)  # a deterministic model: the mean gradient is the gradient
    assert (three.queries == 9).all() and (one.queries == 3).all()
    torch.manual_seed(0)
    noisy = Noisy(fashion.model)
    single = PGD(eps=0.08, steps=5, random_start=False)(noisy, x, Untargeted(y))
    torch.manual_seed(0)
    averaged = PGD(eps=0.08, steps=5, random_start=False, eot_samples=8)(noisy, x, Untargeted(y))
    assert averaged.success.sum() >= single.success.sum()
