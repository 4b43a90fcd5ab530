"""The runner's side of an attack: what a run does with it besides calling it (the row's extra keys and
files, a control row next to it, cross-model tables, matrix rows for its parts, what of its extras a chunk
keeps). An attack plugin is its settings, `run` and its bound (`advlab.core.attack`); a plugin whose rows need
more registers a `Companion` under its name (`@register_companion("universal")`), and the runner looks it up.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch

if TYPE_CHECKING:
    from advlab.core.attack import Attack

C = TypeVar("C", bound="Companion")


@dataclass
class Control:
    """A control row next to an attack's row: another attack (e.g. random noise of the same size), the suffix
    of its files' tag, what it is a baseline for (results' "baseline"), the companion of its row, and its name
    beside the attack's wherever the row is named (results' "control": the report, log.txt)."""

    attack: Attack
    tag: str
    baseline: str
    companion: Companion
    label: str = "control"


class Companion:
    """Rows as the runner builds them for every attack; subclass for an attack whose rows need more. One
    instance serves one attack of a run (its rows on every model), so it may keep what a control needs."""

    transfer_key: ClassVar[str] = "transfer"  # results' key of this attack's `transfer` table
    keep_perturbations: ClassVar[bool] = False  # its `transfer` reads every image's x_adv - x back from arrays/

    def row_extras(self, attack: Attack, tag: str, run: Any, subject: Any, row: dict[str, Any],
                   batch_size: int, device: torch.device, arrays: Path) -> dict[str, Any]:
        """Keys added to the attack's results row (and files written under `arrays`), given the attack's run
        over the subject's images (`advlab.run.chunks.AttackRun`: its `per_image` and `extras`) and the row
        built so far."""
        return {}

    def control(self, attack: Attack) -> Control | None:
        """A control row to run after the attack's own, or None."""
        return None

    def parts(self, attack: Attack, per_image: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor, str]]:
        """Rows of their own in the robustness matrix for parts of a composite attack: (label, fooled (M,)
        bool over the attacked images, threat), from the attack's `per_image` results (M,) of every chunk."""
        return []

    @classmethod
    def transfer(cls, subjects: list[Any], rows: list[tuple[int, dict[str, Any]]], run_dir: Path, batch_size: int,
                 device: torch.device) -> dict[str, Any] | None:
        """In runs with several models: results' `transfer_key` table from this attack's rows (model index,
        row), e.g. each model's perturbation evaluated on every model; None for none."""
        return None


_COMPANIONS: dict[str, type[Companion]] = {}  # attack name -> its companion class


def register_companion(attack_name: str) -> Callable[[type[C]], type[C]]:
    """Class decorator: the runner's companion of the attack registered as `attack_name`."""

    def register(cls: type[C]) -> type[C]:
        _COMPANIONS[attack_name] = cls
        return cls

    return register


def companion_for(attack_name: str) -> Companion:
    """A new companion for one attack of a run (the plain one where the attack registers none). The attack's
    module is imported by looking the attack up (`advlab.core.registry.get_attack`) before this is asked."""
    return _COMPANIONS.get(attack_name, Companion)()
