"""Randomised models (a stochastic defense, noise in the forward pass): every prediction is a draw, so one
prediction per image over- or understates its accuracy. A subject whose two passes on the same images
differ is measured over `RANDOM_PREDICTIONS` predictions per image: each image's verdict is the share of
its predictions that are right (1 or 0 for a deterministic model), an attack row's accuracy the mean of
those shares (the mean of the k per-round accuracies) with their spread over the rounds, and the worst case
takes per image the smallest share any attack left (the rule: an image is as robust as the attack that
fools it most often leaves it). AutoAttack counts an image fooled when one prediction after the attack is
wrong (Croce & Hein, ICML 2020); the mean over k predictions is that number's expectation.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from advlab.core.randomness import passes_differ
from advlab.tasks import Subject, Task

RANDOM_PREDICTIONS = 10  # predictions per image of a randomised subject's final evaluation


def prediction_count(model: nn.Module, x: torch.Tensor) -> int:
    """RANDOM_PREDICTIONS where two passes on the images x (a few suffice) differ, else 1."""
    return RANDOM_PREDICTIONS if passes_differ(model, x) else 1


def right_shares(task: Task, model: nn.Module, images: Any, labels: torch.Tensor, k: int, batch_size: int,
                 device: torch.device, first: Any = None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """((N,) float: each image's share of k predictions that are right, (k,) the accuracy of each round), or
    None for a task without a per-image verdict; `first`, the task's predictions already made on `images`,
    is the first round."""
    rounds = []
    for i in range(k):
        predictions = first if i == 0 and first is not None else task.predict(model, images, batch_size, device)
        right = task.correct(predictions, labels)
        if right is None:
            return None
        rounds.append(right.float().cpu())
    stacked = torch.stack(rounds)  # (k, N)
    return stacked.mean(0), stacked.mean(1)


def clean_shares(subject: Subject, batch_size: int, device: torch.device) -> torch.Tensor | None:
    """(N,) the subject's clean verdicts: shares over its predictions where it is randomised, else 1/0."""
    if subject.predictions > 1:
        found = right_shares(subject.task, subject.model, subject.data.images, subject.labels, subject.predictions,
                             batch_size, device, first=subject.clean)
        return found[0] if found is not None else None
    right = subject.task.correct(subject.clean, subject.labels)
    return right.float().cpu() if right is not None else None


__all__ = ["RANDOM_PREDICTIONS", "clean_shares", "prediction_count", "right_shares"]
