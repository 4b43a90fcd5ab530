"""Tasks as adapters: one object per task (classification, segmentation, detection) owns
everything task-specific, so that the runner, the rows and the report look the task up and never
branch on it (the pattern of detectron2's per-task evaluators and timm's registry).

A task gives: `predict` (outputs of a batch -> predictions), `reference` (ground truth, or the
clean prediction for unlabeled data), `plan` (the criterion, which images to attack, starting
points), `score` (the headline number: accuracy, mIoU, ...), `metrics` and `samples` (the row keys
and the per-image records of results.json), `correct` (the per-image verdict of the robustness
matrix) and `view` (its part of the report). Each built-in task is a package holding all of it."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from advlab.core.catalog import Catalog
from advlab.view.task_view import TaskView

if TYPE_CHECKING:
    from advlab.core.attack import Attack
    from advlab.core.config import AttackSpec
    from advlab.core.criteria import Criterion
    from advlab.core.images import Images
    from advlab.data.image_set import ImageSet


@dataclass
class Plan:
    """What one attack runs on: its criterion over all N images, which images it attacks (N,) bool,
    and starting points (N, C, H, W), a tensor or `Images`, for decision-based targeted attacks (or None)."""

    criterion: Criterion
    attacked: torch.Tensor
    starting_points: torch.Tensor | Images | None


@dataclass(frozen=True)
class DefaultRun:
    """What `advlab attack` runs a task on when no --model is given: a model of the zoo and its data."""

    model: str
    weights: str | None
    data: str
    n: int  # images: a few minutes of the task's slowest attack on 2 CPU cores


@dataclass
class HeldOut:
    """Images a result is evaluated on besides the attacked ones, with the model's clean predictions
    (e.g. a universal perturbation's held-out fooling ratio)."""

    data: ImageSet
    clean: Any


@dataclass
class Subject:
    """One model with its task, data, clean predictions and reference targets (the same images for
    every attack)."""

    model: nn.Module  # an ImageClassifier, or Defended(classifier, defense)
    task: Task
    data: ImageSet
    clean: Any  # the task's predictions on data.images
    labels: torch.Tensor  # (N, ...) ground truth, or the clean prediction for unlabeled data
    held_out: HeldOut | None
    predictions: int = 1  # predictions per image of the final evaluation: k for a randomised model (run.randomised)
    # what the run built once for this subject and every attack row reuses (e.g. the binarization test's
    # binarized models, by threat model)
    built: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def held_out_or_data(self) -> HeldOut:
        return self.held_out or HeldOut(self.data, self.clean)


class Task(abc.ABC):
    """Base class of task adapters; register subclasses with `@register_task`."""

    name: ClassVar[str] = ""
    score_name: ClassVar[str] = "accuracy"  # the headline number: results' clean[score_name], defense rows
    probes: ClassVar[bool] = True  # the runner's sanity probes (advlab.run.sanity) apply to its models
    view: ClassVar[TaskView] = TaskView()  # its part of the report: summary columns, glossary, cards, drawings
    default_run: ClassVar[DefaultRun | None] = None  # without --model: this model and data (None: the config's)

    @abc.abstractmethod
    def predict(self, model: nn.Module, x: torch.Tensor | Images, batch_size: int, device: torch.device) -> Any:
        """Predictions for (N, C, H, W) images (a tensor, or `Images` streamed with `advlab.core.images.batches`),
        in batches, on the CPU."""

    @abc.abstractmethod
    def reference(self, data: ImageSet, clean: Any) -> torch.Tensor:
        """The targets results are measured against: ground truth where the data has it, else the clean prediction."""

    @abc.abstractmethod
    def plan(self, spec: AttackSpec, attack: Attack, subject: Subject, device: torch.device, *,
             seed: int) -> Plan:
        """The criterion, the images to attack and starting points; raises AdvlabError for a bad target.
        Random choices (e.g. adversarial labels) are keyed by `seed` and each image's pixels. Cheap and
        side-effect free: the runner calls it for every attack before it writes anything."""

    @abc.abstractmethod
    def score(self, predictions: Any, reference: torch.Tensor) -> float:
        """The headline number of predictions against the reference (e.g. accuracy)."""

    @abc.abstractmethod
    def metrics(self, subject: Subject, plan: Plan, adv: Any, success: torch.Tensor, queries: torch.Tensor,
                dist: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The row metrics of one attack (N images; `plan.attacked` and `success` (N,) bool)."""

    @abc.abstractmethod
    def samples(self, subject: Subject, plan: Plan, adv: Any, success: torch.Tensor, queries: torch.Tensor,
                dist: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
        """One record per image for results.json."""

    def correct(self, predictions: Any, reference: torch.Tensor) -> torch.Tensor | None:
        """(N,) bool: images the predictions get right, for the worst case over attacks
        (`advlab.run.robustness`); None where the task has no per-image verdict."""
        return None

    def defense_records(self, subject: Subject, index: torch.Tensor, adv: Any, after: Any) -> list[dict[str, Any]]:
        """The defense gallery's words for images `index` (k,): what the clean, adversarial (`adv`) and
        defended (`after`) predictions say, each task in its own keys (nothing here)."""
        return [{} for _ in index.tolist()]

    def arrays(self, subject: Subject, adv: Any) -> dict[str, torch.Tensor]:
        """Tensors the report needs besides x and x_adv (e.g. label maps), saved in the row's arrays file."""
        return {}


TASKS = Catalog("task", group="advlab.tasks",
                builtin=("advlab.tasks.classification", "advlab.tasks.segmentation", "advlab.tasks.detection"))


def register_task(cls: type[Task]) -> type[Task]:
    """Class decorator: make a task adapter available under `cls.name` (one instance per task)."""
    TASKS.add(cls.name, cls())
    return cls


def get_task(name: str) -> Task:
    return TASKS.get(name).obj


def task_names() -> list[str]:
    return TASKS.names()
