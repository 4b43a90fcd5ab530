"""Typed results: what a run measured, as results.json holds it and as `advlab.evaluate` returns it.

One schema (`SCHEMA`), one writer (`Results.to_json`) and one reader (`read_results`): the runner builds
these objects, the report, `advlab runs`, `export`, `compare` and the Python API read them back. The
JSON schema is generated from these types (`json_schema`, `advlab schema`), never written by hand.

Dataclasses rather than pydantic: no dependency, and every field is plain data (numbers, strings,
lists, dicts). What a task measures and what an attack adds to its row are named by the task and the
plugin (`AttackRow.measures`, `DefenseRow.measures`), so a third-party task or attack needs no edit here.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar, Union

from advlab.core.errors import AdvlabError
from advlab.core.schema import WORST_CASE

SCHEMA = 1  # the version of results.json this advlab writes; `read_results` refuses any other in one line
OMIT = {"omit_if_none": True}  # a key written only when it has a value (its absence is meaningful)

T = TypeVar("T", bound="Record")


class Record:
    """Base of the typed parts: dict in (`from_dict`), dict out (`to_dict`), fields in declaration order.
    Keys a type does not declare go to its `extra_field` (a dict) where it has one, so older and newer
    readers agree on every declared key."""

    extra_field: ClassVar[str | None] = None

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise AdvlabError(f"results: expected an object for {cls.__name__}, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)} - {cls.extra_field}  # type: ignore[arg-type]
        values = {name: _decode(hints[name], data[name]) for name in known if name in data}
        if cls.extra_field is not None:
            values[cls.extra_field] = {k: v for k, v in data.items() if k not in known}
        try:
            return cls(**values)
        except TypeError as exc:
            raise AdvlabError(f"results: {cls.__name__} is missing a field ({exc})") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name == self.extra_field:
                out.update(value)
            elif not (f.metadata.get("omit_if_none") and value is None):
                out[f.name] = _encode(value)
        return out


def _encode(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _decode(hint: Any, value: Any) -> Any:
    """JSON value -> the declared type: Records (also inside lists and optionals) are built, the rest kept."""
    if value is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        records = [a for a in typing.get_args(hint) if isinstance(a, type) and issubclass(a, Record)]
        return records[0].from_dict(value) if records else value
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(hint) or (Any,)
        return [_decode(item, v) for v in value]
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_dict(value)
    return value


# ---------------------------------------------------------------- the parts
@dataclass(frozen=True)
class RunWarning(Record):
    """A sanity check that flagged the evaluation (`advlab.run.sanity`): what, where, why, what to do."""

    check: str  # e.g. "gradient-masking", "randomised-model"
    where: str  # the matrix column (model / defense / setting) it concerns
    message: str
    advice: str


@dataclass(frozen=True)
class Threat(Record):
    """A threat model: every adversarial within `eps` of its image in `norm` (pixels in [0, 1])."""

    norm: str  # "linf" | "l2"
    eps: float
    label: str  # e.g. "linf eps 0.03137 (8/255)"


@dataclass(frozen=True)
class Column(Record):
    """A column of the robustness matrix: a model without defense, or behind a defense in a setting."""

    model: str | None  # the model's name in runs with several models, else None
    defense: str | None  # e.g. "jpeg q75"; None without defense
    setting: str  # "no defense" | "non-adaptive" | "adaptive" | "worst setting"
    label: str
    clean_accuracy: float | None  # share of images the column classifies right before any attack


@dataclass(frozen=True)
class MatrixRow(Record):
    """One attack's accuracy (clean-correct and never fooled within the threat model) per column."""

    attack: str  # the attack's label, or "worst case"
    accuracy: list[float | None]  # one per column; None where the attack did not run in that column
    counted: str | None = field(default=None, metadata=OMIT)  # "all" | "within eps" | "any distance"


@dataclass(frozen=True)
class Matrix(Record):
    """The robustness matrix of one threat model (None: unbounded attacks only, every success counts)."""

    threat: Threat | None
    rows: list[MatrixRow]

    @property
    def worst_case(self) -> MatrixRow:
        return next(r for r in self.rows if r.attack == WORST_CASE)


@dataclass(frozen=True)
class Curve(Record):
    """Accuracy against eps (`kind` "eps": rows of one attack at several eps) or against the distance of a
    minimal-perturbation attack (`kind` "minimal")."""

    kind: str
    column: str
    setting: str
    attack: str
    norm: str
    points: list[list[float | None]]  # [[eps or distance, accuracy], ...]


@dataclass(frozen=True)
class Robustness(Record):
    """Accuracy under attack: one matrix per threat model over the same columns, and the curves."""

    n: int  # images
    columns: list[Column]
    matrices: list[Matrix]
    curves: list[Curve]


@dataclass(frozen=True)
class BinarizationTest(Record):
    """An attack row's binarization test (Zimmermann et al., NeurIPS 2022; `advlab.run.binarization`): the
    share of `n` binarized models, each with an adversarial example known to exist within `threat`, that the
    same attack fooled; `passed` at `pass_rate` or more. `skipped` says why a row has no test."""

    success_rate: float | None = field(default=None, metadata=OMIT)  # None where no binarized model was built
    n: int | None = field(default=None, metadata=OMIT)  # binarized models attacked
    passed: bool | None = field(default=None, metadata=OMIT)
    pass_rate: float | None = field(default=None, metadata=OMIT)  # the paper's 0.95
    setup_failed: int | None = field(default=None, metadata=OMIT)  # images whose binarized model was not valid
    threat: Threat | None = field(default=None, metadata=OMIT)
    inner_points: int | None = field(default=None, metadata=OMIT)  # per image, the clean image included
    build_s: float | None = field(default=None, metadata=OMIT)  # building the binarized models (once per model)
    wall_s: float | None = field(default=None, metadata=OMIT)  # the attack on them
    skipped: str | None = field(default=None, metadata=OMIT)


@dataclass
class AttackRow(Record):
    """One attack on one model (bare, or defended in the adaptive setting): what is common to every row,
    and `measures`, what the model's task measured (its score before and after, success rate, distances,
    per-image samples) and what the attack added (e.g. a universal perturbation's fooling ratios)."""

    extra_field: ClassVar[str | None] = "measures"

    method: str
    setting: str  # "plain model" | "defended model (adaptive)"
    task: str
    params: dict[str, Any]  # every setting of the attack, defaults filled
    threat: str  # what the attack knows: "white-box" | "score" | "decision" | ...
    criterion: str  # "untargeted" | "targeted"
    queries_total: int
    wall_s: float
    backend: str = "ours"
    defense: str | None = None
    adaptive: str | None = None  # "exact" | "bpda" in adaptive rows
    defense_variant: str | None = field(default=None, metadata=OMIT)
    model: str | None = field(default=None, metadata=OMIT)  # in runs with several models
    target_class: int | None = None
    starting_image: str | None = None
    arrays: str | None = None  # arrays/<tag>.pt: the first images and their adversarials
    binarization_test: BinarizationTest | None = field(default=None, metadata=OMIT)  # with --binarization-test
    measures: dict[str, Any] = field(default_factory=dict)

    @property
    def success_rate(self) -> float | None:
        return self.measures.get("success_rate")


@dataclass
class DefenseRow(Record):
    """One defense in front of one model: its clean score, and per attack the score without the defense,
    non-adaptive (the bare model's adversarials through the defense) and adaptive; `measures` holds the
    task's and the defense's own keys (e.g. the gallery)."""

    extra_field: ClassVar[str | None] = "measures"

    method: str
    params: dict[str, Any]
    measures: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelInfo(Record):
    """The attacked model as results.json names it (`describe()` of its wrapper)."""

    extra_field: ClassVar[str | None] = "details"

    name: str
    task: str
    weights: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # input size, mean/std, class count, ...


@dataclass
class DataInfo(Record):
    """The images of the run: their source, how many, and where their labels come from."""

    extra_field: ClassVar[str | None] = "details"

    name: str
    n: int
    label_source: str  # "ground-truth" | "prediction" | "none"
    details: dict[str, Any] = field(default_factory=dict)  # e.g. "eval": the held-out set


@dataclass
class Results(Record):
    """A finished run, as results.json holds it."""

    extra_field: ClassVar[str | None] = "tables"

    schema: int
    advlab_version: str
    name: str
    created: str  # UTC, ISO 8601
    seed: int
    device: str
    torch: str
    python: str
    precision: str
    batch_size: int
    world_size: int
    model: ModelInfo
    data: DataInfo
    clean: dict[str, float | None]  # the task's score on the clean images, e.g. {"accuracy": 0.9}
    attacks: list[AttackRow]
    defenses: list[DefenseRow]
    notes: list[str] | None = field(default=None, metadata=OMIT)  # what advlab chose on the user's behalf
    models: list[dict[str, Any]] | None = field(default=None, metadata=OMIT)  # runs with several models
    robustness: Robustness | None = field(default=None, metadata=OMIT)
    warnings: list[RunWarning] = field(default_factory=list)
    tables: dict[str, Any] = field(default_factory=dict)  # an attack's cross-model table, under its own key

    def to_json(self) -> str:
        """results.json's text: the one serialiser."""
        return json.dumps(self.to_dict(), indent=1)


def read_results(path: Path) -> Results:
    """RUN_DIR/results.json (or the file itself) as `Results`; one line naming the problem otherwise:
    missing, not JSON, written in another schema version, or missing a key of the schema."""
    return Results.from_dict(read_results_json(path))


def read_results_json(path: Path) -> dict[str, Any]:
    """RUN_DIR/results.json's object, its schema version checked, not its keys (the report renders what
    it finds, a broken key included)."""
    path = path / "results.json" if path.is_dir() else path
    if not path.is_file():
        raise AdvlabError(f"{path} not found: give a run directory advlab wrote (it writes results.json last, "
                          "so an unfinished run has none: continue it with `advlab run --resume DIR`)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdvlabError(f"{path} is not valid JSON ({exc}); re-run the attack to rewrite it") from exc
    if not isinstance(data, dict):
        raise AdvlabError(f"{path} does not hold a JSON object; re-run the attack to rewrite it")
    check_schema(data, str(path))
    return data


def check_schema(data: dict[str, Any], where: str = "results") -> None:
    """One line where results.json's `schema` is not the version this advlab reads."""
    version = data.get("schema")
    if version != SCHEMA:
        newer = isinstance(version, int) and version > SCHEMA
        raise AdvlabError(f"{where} has results schema {version!r}; this advlab reads schema {SCHEMA}: "
                          + ("upgrade advlab (pip install -U advlab)" if newer else "re-run it with this advlab"))


def results_from_dict(data: dict[str, Any], where: str = "results") -> Results:
    """Typed results from results.json's object, after checking its schema version."""
    check_schema(data, where)
    return Results.from_dict(data)


# ---------------------------------------------------------------- the published JSON schema
def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of results.json, generated from the types above."""
    defs: dict[str, Any] = {}

    def of(hint: Any) -> dict[str, Any]:
        origin = typing.get_origin(hint)
        if origin in (Union, types.UnionType):
            return {"anyOf": [of(a) for a in typing.get_args(hint)]}
        if origin is list:
            (item,) = typing.get_args(hint) or (Any,)
            return {"type": "array", "items": of(item)}
        if origin is dict:
            _, value = typing.get_args(hint) or (str, Any)
            return {"type": "object", "additionalProperties": of(value)}
        if isinstance(hint, type) and issubclass(hint, Record):
            if hint.__name__ not in defs:
                defs[hint.__name__] = {}
                defs[hint.__name__] = record(hint)
            return {"$ref": f"#/$defs/{hint.__name__}"}
        simple = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}
        return {"type": simple[hint]} if hint in simple else {}

    def record(cls: type[Record]) -> dict[str, Any]:
        hints = typing.get_type_hints(cls)
        props, required = {}, []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name == cls.extra_field:
                continue
            props[f.name] = of(hints[f.name])
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if no_default or (f.default is None and not f.metadata.get("omit_if_none") and f.name != "counted"):
                required.append(f.name)
        body: dict[str, Any] = {"type": "object", "description": " ".join((cls.__doc__ or "").split()),
                                "properties": props, "required": required}
        if cls.extra_field is None:
            body["additionalProperties"] = False
        return body

    top = record(Results)
    top["properties"]["schema"] = {"const": SCHEMA}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "advlab results.json",
            **top, "$defs": defs}


__all__ = ["SCHEMA", "AttackRow", "BinarizationTest", "Column", "Curve", "DataInfo", "DefenseRow", "Matrix", "MatrixRow", "ModelInfo",
           "Record", "Results", "Robustness", "RunWarning", "Threat", "check_schema", "json_schema", "read_results",
           "read_results_json", "results_from_dict"]
