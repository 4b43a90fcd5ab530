"""Catalog-driven checks: every attack is tested the moment it is registered, with the quick settings
it declares; every entry of every catalog (tasks, views, models, image sources) is checked too."""
from __future__ import annotations

import pytest
import torch

from advlab.cli.main import main
from advlab.core import registry
from advlab.core.attack import Attack
from advlab.core.criteria import Untargeted
from advlab.run.chunks import attack_in_chunks

# Share of the targets an attack must fool on the shared test model: 0.9, except DAG on the lab's small
# segmenter, whose permuted label maps no attack drives past about 0.93 (targeted PGD at eps 0.4): DAG reaches 0.74.
MIN_FOOLED = {"dag": 0.6}
FEWER_STEPS = {"dag": {"max_iterations": 50}}  # batch invariance runs an attack five times: shorter is enough


def info_quick(name: str) -> dict:
    return registry.get_attack(name).cls.quick_settings


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
    from advlab.core.config import AttackSpec
    from advlab.data.image_set import ImageSet
    from advlab.tasks import Subject, get_task

    task = get_task("segmentation")
    data = ImageSet(segmenter.x[:n], segmenter.masks[:n], [str(i) for i in range(n)], "scenes", "ground-truth")
    clean = task.predict(segmenter.model, data.x, 64, torch.device("cpu"))
    subject = Subject(segmenter.model, task, data, clean, segmenter.masks[:n], None)
    plan = task.plan(AttackSpec(info.name), info.cls(**info.cls.quick_settings), subject, torch.device("cpu"),
                     seed=0)
    return PerImage(segmenter.model).eval(), data.x, plan.criterion


@pytest.mark.parametrize("name", list(registry.attacks()))
def test_every_attack_fools_a_trained_model(name, digits, segmenter):
    assert info_quick(name), f"give the attack {name!r} quick_settings (seconds on a small CPU model)"
    info = registry.get_attack(name)
    assert issubclass(info.cls, Attack) and info.threat and info.tasks and info.summary
    model, x, criterion = task_case(info, digits, segmenter, 16 if "classification" in info.tasks else 4)
    result = info.cls(**info.cls.quick_settings)(model, x, criterion, seed=0)
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
    settings = {**info.cls.quick_settings, **FEWER_STEPS.get(name, {})}
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
        for part in ("extras", "per_image", "traces"):
            for key, value in getattr(first, part).items():
                assert torch.equal(getattr(run, part)[key], value), f"{part} {key}"
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


# attacks that draw nothing at random (DAG's targets come from the task's plan; FAB-T's one restart starts at the
# clean image, its random restarts are tested in test_autoattack.py)
DETERMINISTIC = {"fgsm", "dag", "fab-t"}


# ---------------------------------------------------------------- every catalog
def test_every_task_has_a_view_of_its_own():
    from advlab.tasks import TASKS
    from advlab.view.task_view import TaskView

    assert TASKS.names() == ["classification", "detection", "segmentation"]
    views = [entry.obj.view for entry in TASKS]
    for entry, view in zip(TASKS, views):
        assert entry.obj.name == entry.name and entry.obj.score_name and entry.summary
        assert isinstance(view, TaskView) and type(view) is not TaskView and view.label == entry.name
        assert view.columns and view.glossary and set(view.status) >= {"success", "failed", "skipped"}
    assert len({id(v) for v in views}) == len(views)


def test_every_model_source_claims_its_own_names_and_no_earlier_source_does():
    from advlab.zoo.models import MODELS

    for entry in MODELS.in_order():
        example = entry.meta["usage"].split(",")[0].split(" ")[0]
        first = MODELS.find(lambda e: e.meta["claims"](example))
        assert first is entry, (entry.name, example, first and first.name)
        assert entry.meta["task"] in (None, "classification", "segmentation", "detection") and entry.summary


def test_every_image_source_takes_the_arguments_its_usage_names():
    from advlab.data.sources import DATA, schemes

    for entry in DATA.in_order():
        scheme, _, rest = entry.meta["usage"].partition(":")
        takes = entry.meta["argument"]
        if "[" in scheme:  # an optional argument, e.g. fashion-mnist[:train|test]
            assert takes(None) and takes("test") and not takes("val")
        elif rest:
            assert takes("somewhere") and not takes(None) and not takes("")
        else:
            assert takes(None) and not takes("x")
        assert (entry.meta["python_only"] or entry.meta["usage"] in schemes()) and entry.summary  # --data lists it


def test_a_name_registered_twice_is_an_error_and_the_same_object_again_is_not():
    from advlab.core.catalog import Catalog
    from advlab.core.errors import AdvlabError

    catalog = Catalog("widget-test", group="advlab.widget-test", builtin=())
    catalog.add("one", PerImage)
    catalog.add("one", PerImage)  # a module imported twice registers the same class: fine
    with pytest.raises(AdvlabError, match="registered twice, by .*PerImage and by .*Attack"):
        catalog.add("one", Attack)
    with pytest.raises(AdvlabError, match="unknown widget-test 'two'; choose one of: one"):
        catalog.get("two")
    with pytest.raises(ValueError, match="lower-case"):
        catalog.add("Bad Name", Attack)


def test_list_shows_every_catalog(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for heading in ("attacks:", "defenses:", "tasks:", "models (", "image sources (--data):"):
        assert heading in out
    assert "torchvision-segmentation" in out and "folder:PATH" in out and "score=miou" in out


def test_catalog_order_is_the_built_in_order_whatever_was_imported_first():
    """Rows without a task render as the catalog's first task: that must not depend on which task
    module a program happened to import first."""
    import subprocess
    import sys

    code = ("import advlab.tasks.detection, advlab.tasks.segmentation\n"
            "from advlab.tasks import TASKS\n"
            "print(' '.join(e.name for e in TASKS.in_order()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["classification", "segmentation", "detection"]
