"""`Evaluation`: a finished run as a Python object (typed results, the robust accuracy, a table for the
terminal and for notebooks, `save`), and `load` for any run directory advlab wrote."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from advlab.core.errors import AdvlabError
from advlab.core.results import (
    AttackRow,
    BinarizationTest,
    DefenseRow,
    Matrix,
    Results,
    Robustness,
    RunWarning,
    read_results,
)
from advlab.core.schema import NO_DEFENSE
from advlab.report.terminal import html_summary, text_summary
from advlab.run.runlock import LOCK_FILES


class Evaluation:
    """A finished evaluation: `results` (typed, as results.json holds them) and the run directory that
    holds its arrays and report (a temporary one, removed with this object, unless the run was given
    `out=` or loaded)."""

    def __init__(self, run_dir: Path) -> None:
        self.results: Results = read_results(run_dir)
        self.run_dir = Path(run_dir)
        self._temporary: tempfile.TemporaryDirectory | None = None

    def keep_alive(self, temporary: tempfile.TemporaryDirectory | None) -> None:
        """Own the temporary directory the run was written to: removed with this object."""
        self._temporary = temporary

    # ---------------------------------------------------------------- the numbers
    @property
    def robustness(self) -> Robustness:
        """The robustness matrices (one per threat model), their columns and curves; an error for a task without a
        per-image verdict."""
        if self.results.robustness is None:
            raise AdvlabError("this run has no robustness matrix (its task has no per-image verdict); read "
                              "results.attacks for the task's own scores")
        return self.results.robustness

    @property
    def matrices(self) -> list[Matrix]:
        """One robustness matrix per threat model: per attack (and the worst case) the accuracy in each column."""
        return self.robustness.matrices

    @property
    def robust_accuracy(self) -> float | dict[str, float | None] | None:
        """The worst case over every attack of the model without defense: a float where the evaluation has one
        threat model, {threat label: accuracy} where it has several."""
        rob = self.robustness
        column = next(i for i, c in enumerate(rob.columns) if c.setting == NO_DEFENSE)
        worst = {m.threat.label if m.threat else "any distance": m.worst_case.accuracy[column] for m in rob.matrices}
        return next(iter(worst.values())) if len(worst) == 1 else worst

    @property
    def clean_accuracy(self) -> float | None:
        """The task's headline score on the clean images (accuracy for classifiers)."""
        return next(iter(self.results.clean.values()), None)

    @property
    def attacks(self) -> list[AttackRow]:
        """Every attack row: each attack on each model, bare and (with defenses) adaptive."""
        return self.results.attacks

    @property
    def defenses(self) -> list[DefenseRow]:
        """One row per defense and model: clean accuracy, and per attack the accuracy without the defense,
        non-adaptive and adaptive."""
        return self.results.defenses

    @property
    def binarization_tests(self) -> list[tuple[AttackRow, BinarizationTest]]:
        """Each attack row that ran the binarization test (`binarization_test=N`) with its test: the row's
        method, setting and defense say which evaluation it tested; `test.passed` the paper's verdict."""
        return [(row, row.binarization_test) for row in self.attacks if row.binarization_test is not None]

    @property
    def warnings(self) -> list[RunWarning]:
        """What the sanity checks flagged (gradient masking, randomised models, a failed binarization test, ...),
        each with its advice."""
        return self.results.warnings

    @property
    def notes(self) -> list[str]:
        """What advlab chose or changed on the caller's behalf (e.g. a RobustBench entry's threat model)."""
        return self.results.notes or []

    @property
    def published(self) -> dict[str, Any] | None:
        """The model's published figures where a leaderboard has them (a RobustBench entry's clean and
        AutoAttack accuracy, with their threat model), to compare with `clean_accuracy` and `robust_accuracy`."""
        found = self.results.model.details.get("published")
        return found if isinstance(found, dict) else None

    @property
    def report(self) -> Path:
        """The run's HTML report."""
        return self.run_dir / "index.html"

    # ---------------------------------------------------------------- showing and keeping it
    def save(self, directory: str | Path) -> Path:
        """Copy the run (results.json, index.html, config.yaml, log.txt, arrays/) into `directory`, which must
        be new or empty; returns it. `advlab.load(directory)` reads it back."""
        target = Path(directory).expanduser()
        if target.resolve() == self.run_dir.resolve():
            return target
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise AdvlabError(f"save: {target} exists and is not an empty directory; advlab never writes into a "
                              "folder of yours: pick a new one")
        shutil.copytree(self.run_dir, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(*LOCK_FILES))
        return target

    def __repr__(self) -> str:
        return text_summary(self.results).rstrip()

    def _repr_html_(self) -> str:
        return html_summary(self.results)


def load(run_dir: str | Path) -> Evaluation:
    """A finished run of advlab (command line or Python) as an `Evaluation`."""
    return Evaluation(Path(run_dir).expanduser())


__all__ = ["Evaluation", "load"]
