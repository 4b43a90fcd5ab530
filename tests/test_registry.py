"""Registry-driven checks: every registered attack is tested the moment it is registered."""
from __future__ import annotations

import pytest
import torch

from advlab import registry
from advlab.attack import Attack
from advlab.cli import main
from advlab.criteria import Untargeted
from advlab.evaluate import attack_in_chunks

# Small budgets per attack for the shared checks; a new plugin must add its entry here.
SMALL_SETTINGS: dict[str, dict] = {
    "boundary": {"steps": 150, "candidates": 2, "progress": False},
    "fgsm": {"eps": 0.3},
    "pgd": {"eps": 0.3},
    "universal": {"solver": "deepfool", "norm": "l2", "eps": 3.0, "delta": 0.0, "batch_size": 1, "progress": False},
    "dag": {"max_iterations": 200, "progress": False},
    "apgd": {"eps": 0.3, "steps": 20},
    "apgd-t": {"eps": 0.3, "steps": 10, "targets": 3},
    "square": {"eps": 0.3, "max_queries": 300},
    "standard": {"eps": 0.3, "steps": 10, "targets": 3, "square_queries": 100},
}
# Share of the targets an attack must fool on the shared test model: 0.9, except DAG on the lab's small
# segmenter, whose permuted label maps no attack drives past about 0.93 (targeted PGD at eps 0.4): DAG reaches 0.74.
MIN_FOOLED = {"dag": 0.6}
FEWER_STEPS = {"dag": {"max_iterations": 50}}  # batch invariance runs an attack five times: shorter is enough


class PerImage(torch.nn.Module):
    """Runs a model one image at a time. oneDNN convolutions round differently for different batch sizes
    (the last bit), and decision-based steps and DAG's active sets amplify it; this isolates the
    attack's own batch invariance from the model's kernels."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.model(x[i:i + 1]) for i in range(x.shape[0])])


def task_case(info, digits, segmenter, n: int):
    """(model, images, criterion) for the attack's first declared task: the digits CNN's correctly
    classified images, or fashion-scenes on the lab's segmenter with the task's own targets."""
    if "classification" in info.tasks:
        x, y = digits.correct(n)
        return PerImage(digits.model).eval(), x, Untargeted(y)
    from advlab.config import AttackSpec
    from advlab.data import ImageSet
    from advlab.rows import Subject
    from advlab.tasks import get_task

    task = get_task("segmentation")
    data = ImageSet(segmenter.x[:n], segmenter.masks[:n], [str(i) for i in range(n)], "scenes", "ground-truth")
    clean = task.predict(segmenter.model, data.x, 64, torch.device("cpu"))
    subject = Subject(segmenter.model, task, data, clean, segmenter.masks[:n], None)
    plan = task.plan(AttackSpec(info.name), info.cls(**SMALL_SETTINGS[info.name]), subject, torch.device("cpu"),
                     seed=0)
    return PerImage(segmenter.model).eval(), data.x, plan.criterion


@pytest.mark.parametrize("name", list(registry.attacks()))
def test_every_attack_fools_a_trained_model(name, digits, segmenter):
    assert name in SMALL_SETTINGS, f"add small test settings for the new attack {name!r}"
    info = registry.get_attack(name)
    assert issubclass(info.cls, Attack) and info.threat and info.tasks and info.summary
    model, x, criterion = task_case(info, digits, segmenter, 16 if "classification" in info.tasks else 4)
    result = info.cls(**SMALL_SETTINGS[name])(model, x, criterion, seed=0)
    assert result.x_adv.shape == x.shape and 0 <= float(result.x_adv.min()) and float(result.x_adv.max()) <= 1
    with torch.no_grad():
        fooled = criterion.fooled_share(model(result.x_adv))  # (N,) share of each image's targets fooled
    assert fooled.mean() >= MIN_FOOLED.get(name, 0.9)
    assert torch.equal(result.success, fooled >= criterion.threshold)  # success is the criterion's verdict
    if "classification" in info.tasks:
        assert result.success.float().mean() >= 0.9
    assert (result.queries > 0).all() and torch.isfinite(result.distance[result.success]).all()


def test_list_shows_capabilities(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "boundary" in out and "threat=decision" in out and "classification" in out
    assert "hgd" in out and "jpeg         adaptive=bpda" in out and "median       adaptive=exact" in out


@pytest.mark.parametrize("name", list(registry.attacks()))
def test_every_attack_gives_each_image_the_same_result_in_any_batch(name, digits, segmenter, tmp_path):
    """The randomness rule: an image's result depends on the seed and its own pixels only, never on
    the chunking (batch sizes 1, 3 and all), its position or the other images in its chunk.
    A universal perturbation is one object for the whole set: same seed, same v."""
    info = registry.get_attack(name)
    model, x, criterion = task_case(info, digits, segmenter, 7)
    runs = {}
    settings = {**SMALL_SETTINGS[name], **FEWER_STEPS.get(name, {})}
    for batch_size in (1, 3, 7) if not getattr(info.cls, "universal", False) else (7, 7):
        attack = info.cls(**settings)
        runs[batch_size] = attack_in_chunks(attack, model, x, criterion, starting_points=None,
                                            batch_size=batch_size, device=torch.device("cpu"), seed=5,
                                            chunk_dir=tmp_path / f"{name}-{batch_size}-{len(runs)}")
    first = runs[7]
    with torch.no_grad():  # the attack did something worth comparing: it closed a fifth of the gap to all fooled
        before, after = (criterion.fooled_share(model(v)).mean() for v in (x, first.x_adv.tensor()))
        assert (after - before) / (1 - before) > 0.2  # (DAG's targets keep background: its share starts high)
    for batch_size, run in runs.items():
        assert torch.equal(run.x_adv.tensor(), first.x_adv.tensor()), f"{name}: batch size {batch_size} changed x_adv"
        assert torch.equal(run.success, first.success) and torch.equal(run.queries, first.queries)
        for key, value in first.extras.items():
            assert torch.equal(run.extras[key], value), key
    # the same images in reverse order, as one chunk: each image keeps its own result
    flipped = attack_in_chunks(info.cls(**settings), model, x.flip(0),
                               criterion.subset(torch.arange(len(x) - 1, -1, -1)),
                               starting_points=None, batch_size=7, device=torch.device("cpu"), seed=5,
                               chunk_dir=tmp_path / f"{name}-flipped")
    if not getattr(info.cls, "universal", False):
        assert torch.equal(flipped.x_adv.tensor().flip(0), first.x_adv.tensor())
    # another seed draws other noise (for the attacks that draw any)
    other = attack_in_chunks(info.cls(**settings), model, x, criterion, starting_points=None,
                             batch_size=7, device=torch.device("cpu"), seed=6, chunk_dir=tmp_path / f"{name}-seed6")
    assert torch.equal(other.x_adv.tensor(), first.x_adv.tensor()) == (name in DETERMINISTIC), name


DETERMINISTIC = {"fgsm", "dag"}  # attacks that draw nothing at random (DAG's targets come from the task's plan)
