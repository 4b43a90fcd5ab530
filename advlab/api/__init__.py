"""advlab's library layer: what the command line does, from Python, with objects in memory.

    import advlab
    adv = advlab.attack(model, x, y, method="pgd", eps=8/255).x_adv
    ev = advlab.evaluate(model, (x, y), attacks="standard", threat="linf:8/255"); ev.robust_accuracy

The command line (`advlab.cli`) is a thin caller of `run_config`; layers: cli > api > run > report > ...
"""
from advlab.api.evaluation import Evaluation, load
from advlab.api.run import attack, evaluate, run_config

__all__ = ["Evaluation", "attack", "evaluate", "load", "run_config"]
