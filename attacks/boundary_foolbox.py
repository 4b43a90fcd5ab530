"""`--backend foolbox`: foolbox 3's BoundaryAttack (Rauber et al., JOSS 2020) behind advlab's contract,
so results can be checked against the reference implementation on the same inputs."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from advlab.core.attack import AttackResult
from advlab.core.criteria import Criterion, Targeted
from advlab.core.errors import AdvlabError
from advlab.core.rng import M32, image_keys, mix32

if TYPE_CHECKING:
    from advlab.attacks.boundary import BoundaryAttack


class CallCounter(nn.Module):
    """Counts forward calls; foolbox always evaluates the whole batch, so calls = queries per image."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.model(x)


def run_foolbox_boundary(attack: BoundaryAttack, model: nn.Module, x: torch.Tensor, criterion: Criterion, *,
                         seed: int, starting_points: torch.Tensor | None) -> AttackResult:
    import foolbox as fb

    counter = CallCounter(model).eval()
    fmodel = fb.PyTorchModel(counter, bounds=(0.0, 1.0), device=x.device)
    labels = criterion.labels
    fb_criterion = (fb.criteria.TargetedMisclassification(labels) if isinstance(criterion, Targeted)
                    else fb.criteria.Misclassification(labels))
    fb_attack = fb.attacks.BoundaryAttack(steps=attack.steps, spherical_step=attack.spherical_step,
                                          source_step=attack.source_step, step_adaptation=attack.step_adaptation,
                                          source_step_convergance=attack.source_step_convergence)
    # foolbox draws one noise vector per step for the whole batch, so its results depend on the batch by
    # design; the seed at least follows the images and the run seed, never a chunk index
    batch_seed = int(mix32(image_keys(x, seed).sum() & M32))
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # foolbox draws from the global RNG; leave it untouched
        torch.manual_seed(batch_seed)
        try:
            _, x_adv, success = fb_attack(fmodel, x, fb_criterion, epsilons=None, starting_points=starting_points)
        except ValueError as exc:
            raise AdvlabError(f"foolbox BoundaryAttack could not start: {exc}") from exc
    queries = torch.full((x.shape[0],), counter.calls, dtype=torch.long, device=x.device)
    distance = (x_adv - x).flatten(1).norm(dim=1)
    return AttackResult(x_adv=x_adv, success=success, queries=queries, distance=distance, extras={})
