"""`flip-step`: the basic iterative method (Kurakin et al., "Adversarial examples in the physical
world", ICLR 2017 workshop): `steps` signed-gradient steps of eps / steps on the criterion's loss,
in the l_inf ball of radius eps. It runs on any task whose criterion has a loss; it declares the
toy task only."""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from advlab.core.attack import Attack, AttackResult
from advlab.core.criteria import Criterion
from advlab.core.registry import register_attack


@register_attack("flip-step", threat="white-box", tasks={"attributes"})
class FlipStep(Attack):
    """Iterative l_inf signed-gradient steps on the task's loss (Kurakin et al. 2017)."""

    norm = "linf"
    quick_settings: ClassVar[dict[str, Any]] = {"eps": 0.2, "steps": 3}

    def __init__(self, *, eps: float = 0.1, steps: int = 5) -> None:
        if not 0 < eps <= 1 or steps < 1:
            raise ValueError(f"eps must lie in (0, 1] and steps be at least 1, got eps={eps}, steps={steps}")
        self.eps, self.steps = float(eps), int(steps)

    def run(self, model: nn.Module, x: torch.Tensor, criterion: Criterion, *, seed: int,
            starting_points: torch.Tensor | None) -> AttackResult:
        adv = x.clone()
        for _ in range(self.steps):
            adv.requires_grad_(True)
            grad, = torch.autograd.grad(criterion.loss(criterion.evaluate(model, adv)).sum(), adv)
            step = adv.detach() + self.eps / self.steps * grad.sign()
            adv = torch.min(torch.max(step, x - self.eps), x + self.eps).clamp(0, 1)
        n = x.shape[0]
        return AttackResult(adv.detach(), torch.zeros(n, dtype=torch.bool), torch.full((n,), self.steps),
                            torch.zeros(n))
