"""Typed run configuration: YAML (yaml.safe_load) -> dataclasses with every default filled ->
CLI overrides -> dumped to RUN_DIR/config.yaml. Unknown keys and wrong types are errors that name
the key and say what is accepted."""
from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from advlab.core.checks import parse_number
from advlab.core.errors import AdvlabError
from advlab.core.threat import ThreatModel, threats_from_config


@dataclass
class ModelSpec:
    name: str = "mobilenet_v2"  # torchvision classifier, or FILE.py:factory / package.module:factory
    weights: str | None = "IMAGENET1K_V1"  # torchvision weights enum name, DEFAULT, none, or a FILE for custom models
    mean: list[float] | None = None  # normalisation; None = the weights' own (or 0 for custom models)
    std: list[float] | None = None  # None = the weights' own (or 1 for custom models)
    input_size: int | None = None  # square side the model expects; None = the weights' own crop size
    num_classes: int | None = None  # passed to a custom factory as num_classes=
    class_names: str | None = None  # file with one class name per line (custom models)
    task: str | None = None  # classification | segmentation | detection; None = inferred from the model


@dataclass
class DataSpec:
    source: str = "imagenet-samples"  # imagenet-samples | photos | folder:PATH | tensors:FILE
    n: int | None = None  # first n images in the source's fixed order; None = all
    eval_source: str | None = None  # held-out images for universal perturbations (fooling ratio on unseen data)
    eval_n: int | None = None  # first n held-out images; None = all


@dataclass
class AttackSpec:
    method: str  # a registered attack (`advlab list`)
    target_class: int | None = None  # targeted mode: push every image to this class; None = untargeted
    starting_image: str | None = None  # targeted decision-based attacks: start here (its class is the target)
    target_mask: str | None = None  # segmentation: a shape (PNG) painted with another class, the rest background
    params: dict[str, Any] = field(default_factory=dict)  # the attack's own settings (its __init__ keywords)


@dataclass
class DefenseSpec:
    method: str  # a registered defense (`advlab list`)
    adaptive: bool = True  # also run every attack end to end on the defended model (the adaptive setting)
    params: dict[str, Any] = field(default_factory=dict)  # the defense's own settings (its __init__ keywords)


@dataclass
class RunConfig:
    name: str = "quickstart"  # run directory prefix and report title
    seed: int = 0  # recorded; every random draw of a run derives from it
    device: str = "auto"  # auto | cpu | cuda | cuda:K
    precision: str = "fp32"  # fp32 | tf32 | bf16 (autocast on the model forward)
    batch_size: int = 32  # images sent to an attack at once (its own batch is this times its candidates)
    out: str | None = None  # run directory; None = reports/<name>-<YYYYmmdd-HHMMSS>
    save_adversarials: bool = False  # also every adversarial image (8-bit) in arrays/<tag>.adversarials/ shards
    model: ModelSpec = field(default_factory=ModelSpec)
    models: list[ModelSpec] = field(default_factory=list)  # several models: each attacked; UAPs cross-evaluated
    data: DataSpec = field(default_factory=DataSpec)
    attacks: list[AttackSpec] = field(default_factory=lambda: [AttackSpec(default_attack())])
    defenses: list[DefenseSpec] = field(default_factory=list)  # each evaluated against every attack
    # threat models (norm, eps) of the robustness matrices: one matrix each, an attack counting only where
    # its adversarial lies within eps; empty = one per distinct (norm, eps) of the bounded attacks
    threat: list[ThreatModel] = field(default_factory=list)
    # what advlab chose on the user's behalf (e.g. the segmenter for --method dag without --model):
    # logged once and recorded in results.json
    notes: list[str] = field(default_factory=list)


def default_attack() -> str:
    """The attack a config without `attacks` runs: the one whose plugin declares itself the default."""
    from advlab.core.registry import ATTACKS

    found = ATTACKS.find(lambda e: bool(e.meta.get("default")))
    if found is None:
        raise AdvlabError("no attack declares itself the default; name one under `attacks:`")
    return found.name


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
        raw = yaml.load(p.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
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


def default_weights(model_name: str) -> str | None:
    """Weights when a model is named without them: torchvision's DEFAULT, none for custom factories."""
    return None if ":" in model_name else "DEFAULT"


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


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def validate(cfg: RunConfig) -> None:
    """Checks that need no model or data; every message names the field (and its flag)."""
    if cfg.precision not in ("fp32", "tf32", "bf16"):
        raise AdvlabError(f"precision (--precision) must be fp32, tf32 or bf16, got {cfg.precision!r}")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed < 2**63:
        raise AdvlabError(f"seed (--seed) must be an integer >= 0, got {cfg.seed!r}")
    if cfg.batch_size < 1:
        raise AdvlabError(f"batch_size (--batch-size) must be >= 1, got {cfg.batch_size}")
    if not RUN_NAME.fullmatch(cfg.name) or ".." in cfg.name:
        raise AdvlabError(f"name (--name) {cfg.name!r} must be a plain file name (letters, digits, '_', '-', "
                          "'.'; no '/' or '..'): it names the run directory under reports/")
    for key in ("n", "eval_n"):
        value = getattr(cfg.data, key)
        if value is not None and value < 1:
            raise AdvlabError(f"data.{key} (-{'n' if key == 'n' else '-eval-n'}) must be >= 1, got {value}")
    for i, model in enumerate([cfg.model, *cfg.models]):
        where = "model" if i == 0 else f"models[{i - 1}]"
        for key in ("input_size", "num_classes"):
            value = getattr(model, key)
            if value is not None and value < 1:
                raise AdvlabError(f"{where}.{key} (--{key.replace('_', '-')}) must be >= 1, got {value}")
    for i, attack in enumerate(cfg.attacks):
        target = attack.target_class
        if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target < 0):
            raise AdvlabError(f"attacks[{i}].target_class (--target-class) must be a class index >= 0, "
                              f"got {target!r}")


def attack_defaults(cls: type) -> dict[str, Any]:
    """The keyword settings of an attack class with their defaults (for the resolved config)."""
    return {name: p.default for name, p in inspect.signature(cls.__init__).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}


def instantiate(kind: str, name: str, cls: type, raw: dict[str, Any]) -> Any:
    """Build a registered attack or defense from its settings; an unknown, missing or bad setting
    becomes one line naming it."""
    settings = {p.name: p for p in inspect.signature(cls.__init__).parameters.values()
                if p.kind is inspect.Parameter.KEYWORD_ONLY}
    params = {k: parse_number(v) for k, v in raw.items()}
    unknown = sorted(set(params) - set(settings))
    if unknown:
        raise AdvlabError(f"{kind} {name} has no setting {unknown[0]!r}; valid: {', '.join(settings) or 'none'}")
    missing = [n for n, p in settings.items() if p.default is inspect.Parameter.empty and n not in params]
    if missing:
        raise AdvlabError(f"{kind} {name} needs the setting {missing[0]!r} (e.g. --{missing[0]} FILE, or "
                          f"`{missing[0]}: ...` in its YAML entry)")
    hints = setting_types(cls)
    params = {k: _setting(kind, name, k, v, hints.get(k)) for k, v in params.items()}
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        raise AdvlabError(f"{kind} {name}: {exc}") from None


def setting_types(cls: type) -> dict[str, Any]:
    """The annotated types of a plugin's keyword settings (strings resolved)."""
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001  (a third-party plugin's unresolvable annotation: no type checks)
        return {}


_SCALARS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _setting(kind: str, name: str, key: str, value: Any, hint: Any) -> Any:
    """Check a setting's type against its annotation before the plugin compares it with anything
    (int, float, str, bool, each optionally `| None`); ints are accepted for floats."""
    options = typing.get_args(hint) if _is_union(hint) else (hint,)
    if value is None and type(None) in options:
        return None
    scalars = [o for o in options if o in _SCALARS]
    if not scalars or len(scalars) + (type(None) in options) < len(options):
        return value  # a type we do not check (the plugin validates it)
    for option in scalars:
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if type(value) is option:
            return value
    wanted = " or ".join(_SCALARS[o] for o in scalars) + (" (or null)" if type(None) in options else "")
    raise AdvlabError(f"{kind} {name}: setting {key} must be {wanted}, got {value!r}")


def _is_union(hint: Any) -> bool:
    return isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union


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
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
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


# ---------------------------------------------------------------- paths
def absolute(path: str) -> str:
    """A user path as an absolute, resolved one (`~` expanded), so a run resumes from any directory."""
    return str(Path(path).expanduser().resolve())


def absolute_source(source: str) -> str:
    """'folder:PATH', 'tensors:FILE', 'pairs:DIR', 'voc:ROOT[:...]', 'coco:ROOT[:SPLIT]' with the path made
    absolute; others unchanged."""
    scheme, sep, arg = source.partition(":")
    if sep and arg and scheme in ("voc", "coco"):  # voc:ROOT[:YEAR[:SPLIT]], coco:ROOT[:SPLIT]
        root, colon, rest = arg.partition(":")
        return f"{scheme}:{absolute(root)}{colon}{rest}"
    return f"{scheme}:{absolute(arg)}" if sep and arg and scheme in ("folder", "tensors", "pairs") else source


def absolute_settings(cls: type, settings: dict[str, Any]) -> dict[str, Any]:
    """A plugin's settings with the files they name made absolute: its `path_settings` (a path) and
    `model_settings` (a model name, FILE.py:factory, or a model entry mapping)."""
    out = dict(settings)
    for key in getattr(cls, "path_settings", ()):
        if isinstance(out.get(key), str):
            out[key] = absolute(out[key])
    fields = {f.name for f in dataclasses.fields(ModelSpec)}
    for key in getattr(cls, "model_settings", ()):
        value = out.get(key)
        if isinstance(value, str) and value.strip():
            out[key] = absolute_model(ModelSpec(name=value, weights=None)).name
        elif isinstance(value, dict) and isinstance(value.get("name"), str) and set(value) <= fields:
            resolved = dataclasses.asdict(absolute_model(ModelSpec(**value)))
            out[key] = {k: resolved[k] for k in value}
    return out


def absolute_model(spec: ModelSpec) -> ModelSpec:
    """A model entry whose factory file, weights file and class-names file are absolute paths."""
    name, weights = spec.name, spec.weights
    target, sep, attr = name.rpartition(":")
    if sep and target.endswith(".py"):
        name = f"{absolute(target)}:{attr}"
    if sep and weights is not None and weights.lower() != "none":  # custom models take a weights FILE
        weights = absolute(weights)
    class_names = absolute(spec.class_names) if spec.class_names else None
    return dataclasses.replace(spec, name=name, weights=weights, class_names=class_names)
