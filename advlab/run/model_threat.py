"""The threat model a run inherits from its model: a RobustBench entry was made for its leaderboard's (l_inf
8/255 on CIFAR, ...), so a run of it that names none is evaluated there, as the leaderboard evaluates it."""
from __future__ import annotations

import dataclasses

from advlab.core.config import RunConfig
from advlab.core.registry import get_attack
from advlab.core.settings import within_threat
from advlab.zoo.models import model_threat


def with_model_threat(cfg: RunConfig) -> RunConfig:
    """`cfg` where it names a threat model, or where its models were made for none (or for different ones);
    else `cfg` with that threat model, and every attack that leaves its eps unset bound to it (its eps, and
    its norm where it has a norm setting), so that config.yaml records what the run does."""
    if cfg.threat:
        return cfg
    threats = {model_threat(spec.name, spec.dataset) for spec in (cfg.models or [cfg.model])}
    if len(threats) != 1 or None in threats:
        return cfg
    threat = threats.pop()
    assert threat is not None
    attacks = [dataclasses.replace(spec, params=within_threat(get_attack(spec.method).cls, spec.params, threat)
                                   or spec.params) for spec in cfg.attacks]
    note = (f"threat model {threat.label()}: the one {cfg.model.name} was made for (its leaderboard's); pass --threat "
            "to choose another")
    return dataclasses.replace(cfg, threat=[threat], attacks=attacks, notes=[*cfg.notes, note])
