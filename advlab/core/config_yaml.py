"""YAML (yaml.safe_load) -> `RunConfig` and back (RUN_DIR/config.yaml). Unknown keys, keys given twice
and wrong types are errors that name the key and say what is accepted."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any

import yaml

from advlab.core.checks import parse_number
from advlab.core.config import AttackSpec, DefenseSpec, ModelSpec, RunConfig, default_weights, validate
from advlab.core.errors import AdvlabError
from advlab.core.settings import is_union
from advlab.core.threat import threats_from_config


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a key given twice in one mapping (safe_load keeps the last
    value without a word, so `n: 10` then `n: 1000` would run on 1000 images)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); "
                    "keep one", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML experiment file."""
    p = Path(path)
    if not p.is_file():
        raise AdvlabError(f"config file {p} does not exist; see configs/quickstart.yaml for an example")
    try:
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        raise AdvlabError(f"config {p} is not valid YAML{at}: {getattr(exc, 'problem', exc)}; fix the syntax") from None
    if raw is None:
        raise AdvlabError(f"config {p} is empty; write at least `attacks: [{{method: boundary}}]` (see "
                          "configs/quickstart.yaml)")
    if not isinstance(raw, dict):
        raise AdvlabError(f"config {p} must be a mapping of settings, got a {type(raw).__name__}")
    return config_from_dict(raw, source=str(p))


def config_from_dict(raw: dict[str, Any], *, source: str = "config") -> RunConfig:
    raw = dict(raw)
    attacks = raw.pop("attacks", None)
    defenses = raw.pop("defenses", None)
    threat = raw.pop("threat", None)
    if "model" in raw:
        raw["model"] = _with_default_weights(raw["model"])
    cfg = _build(RunConfig, raw, source)
    if attacks is not None:
        if not isinstance(attacks, list) or not attacks:
            raise AdvlabError(f"{source}: 'attacks' must be a non-empty list of {{method: NAME, ...}} entries")
        cfg.attacks = expand_sweeps([attack_spec_from_dict(a, f"{source}: attacks[{i}]")
                                     for i, a in enumerate(attacks)], source)
    if defenses is not None:
        if not isinstance(defenses, list):
            raise AdvlabError(f"{source}: 'defenses' must be a list of {{method: NAME, ...}} entries")
        cfg.defenses = [defense_spec_from_dict(d, f"{source}: defenses[{i}]") for i, d in enumerate(defenses)]
    if threat is not None:
        cfg.threat = threats_from_config(threat, f"{source}: threat")
    validate(cfg)
    return cfg


def _with_default_weights(model: Any) -> Any:
    if isinstance(model, dict) and isinstance(model.get("name"), str) and "weights" not in model:
        return {**model, "weights": default_weights(model["name"])}
    return model


def attack_spec_from_dict(raw: Any, where: str) -> AttackSpec:
    """Flat YAML entry {method, target_class, ...settings} -> AttackSpec; settings checked by the attack."""
    if not isinstance(raw, dict) or "method" not in raw:
        raise AdvlabError(f"{where} must be a mapping with a 'method' key, e.g. {{method: boundary, steps: 1000}}")
    entry = dict(raw)
    method = entry.pop("method")
    target = entry.pop("target_class", None)
    starting_image = entry.pop("starting_image", None)
    target_mask = entry.pop("target_mask", None)
    for key, value in (("starting_image", starting_image), ("target_mask", target_mask)):
        if value is not None and not isinstance(value, str):
            raise AdvlabError(f"{where}.{key} must be an image file path")
    if not isinstance(method, str):
        raise AdvlabError(f"{where}.method must be a string")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
        raise AdvlabError(f"{where}.target_class must be a class index >= 0, got {target!r}")
    return AttackSpec(method=method, target_class=target, starting_image=starting_image, target_mask=target_mask,
                      params={k: parse_number(v) for k, v in entry.items()})


def expand_sweeps(specs: list[AttackSpec], source: str = "config") -> list[AttackSpec]:
    """An attack entry whose setting is a list (`eps: [2/255, 4/255, 8/255]`) becomes one entry per
    value, in order: a sweep, which the report draws as a robustness curve. One list per entry."""
    out = []
    for i, spec in enumerate(specs):
        swept = [k for k, v in spec.params.items() if isinstance(v, list)]
        if len(swept) > 1:
            raise AdvlabError(f"{source}: attacks[{i}] sweeps {swept[0]} and {swept[1]}; sweep one setting per "
                              f"entry (write one entry per value of the other)")
        if not swept:
            out.append(spec)
            continue
        values = spec.params[swept[0]]
        if not values:
            raise AdvlabError(f"{source}: attacks[{i}].{swept[0]} is an empty list; give at least one value")
        out += [dataclasses.replace(spec, params={**spec.params, swept[0]: parse_number(v)}) for v in values]
    return out


def defense_spec_from_dict(raw: Any, where: str) -> DefenseSpec:
    """Flat YAML entry {method, adaptive, ...settings} -> DefenseSpec; settings checked by the defense."""
    if not isinstance(raw, dict) or not isinstance(raw.get("method"), str):
        raise AdvlabError(f"{where} must be a mapping with a 'method' key, e.g. {{method: jpeg, quality: 75}}")
    entry = dict(raw)
    method = entry.pop("method")
    adaptive = entry.pop("adaptive", True)
    if not isinstance(adaptive, bool):
        raise AdvlabError(f"{where}.adaptive must be true or false, got {adaptive!r}")
    return DefenseSpec(method=method, adaptive=adaptive, params={k: parse_number(v) for k, v in entry.items()})


def to_yaml(cfg: RunConfig) -> str:
    data = dataclasses.asdict(cfg)
    data["attacks"] = [{"method": a.method, "target_class": a.target_class, "starting_image": a.starting_image,
                        **({"target_mask": a.target_mask} if a.target_mask else {}),
                        **a.params} for a in cfg.attacks]
    data["defenses"] = [{"method": d.method, "adaptive": d.adaptive, **d.params} for d in cfg.defenses]
    data["threat"] = [{"norm": t.norm, "eps": t.eps} for t in cfg.threat]
    return yaml.safe_dump(data, sort_keys=False)


def _build(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise AdvlabError(f"{where} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise AdvlabError(f"{where}: unknown key {unknown[0]!r}; valid keys are: {', '.join(names)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = _build(hint, value or {}, f"{where}: {key}")
        elif hint == list[ModelSpec]:
            if not isinstance(value, list):
                raise AdvlabError(f"{where}: {key} must be a list of model entries {{name: ..., weights: ...}}")
            values[key] = [_build(ModelSpec, _with_default_weights(v), f"{where}: {key}[{i}]")
                           for i, v in enumerate(value)]
        else:
            values[key] = _coerce(value, hint, f"{where}: {key}")
    return cls(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    args = typing.get_args(hint)
    if is_union(hint):
        if value is None and type(None) in args:
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, where)
            except AdvlabError:
                continue
        raise AdvlabError(f"{where}: expected {_name(hint)}, got {value!r}")
    origin = typing.get_origin(hint)
    if origin is list:
        items = value if isinstance(value, list) else [value]
        return [_coerce(v, args[0], where) for v in items]
    if origin is dict:
        if not isinstance(value, dict):
            raise AdvlabError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and type(value) is hint:
        return value
    raise AdvlabError(f"{where}: expected {_name(hint)}, got {value!r}")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
