"""advlab: an adversarial robustness lab for PyTorch.

    import advlab
    result = advlab.attack(model, x, y, method="pgd", eps=8/255)       # one attack on one batch
    ev = advlab.evaluate(model, (x, y), threat="linf:8/255")           # AutoAttack's standard sequence
    ev.robust_accuracy; ev.save("reports/mine"); advlab.load("reports/mine")

The API is imported on first use (`advlab.api`), so `import advlab` stays cheap.
"""
from __future__ import annotations

from typing import Any

from advlab.core.version import __version__ as __version__

__all__ = ["Evaluation", "attack", "evaluate", "load", "load_model", "run_config"]


def __getattr__(name: str) -> Any:
    if name == "load_model":
        from advlab.zoo.models import load_model

        return load_model
    if name in __all__:
        import advlab.api

        return getattr(advlab.api, name)
    raise AttributeError(f"module 'advlab' has no attribute {name!r}")
