"""The files a run names, made absolute for RUN_DIR/config.yaml, so that a run resumes from any
directory: data sources, model entries and the plugin settings that name files or models."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from advlab.core.config import ModelSpec


def absolute(path: str) -> str:
    """A user path as an absolute, resolved one (`~` expanded), so a run resumes from any directory."""
    return str(Path(path).expanduser().resolve())


def absolute_source(source: str) -> str:
    """'folder:PATH', 'tensors:FILE', 'pairs:DIR', 'voc:ROOT[:...]', 'coco:ROOT[:SPLIT]', 'cifar10:DIR[:SPLIT]',
    ... with the path made absolute; others unchanged."""
    scheme, sep, arg = source.partition(":")
    if sep and arg and scheme in ("voc", "coco", "cifar10", "cifar100"):  # voc:ROOT[:YEAR[:SPLIT]], coco:ROOT[:SPLIT]
        root, colon, rest = arg.partition(":")
        return f"{scheme}:{absolute(root)}{colon}{rest}"
    folders = ("folder", "tensors", "pairs", "robustbench-imagenet")
    return f"{scheme}:{absolute(arg)}" if sep and arg and scheme in folders else source


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
    if sep and weights is not None and weights.lower() not in ("none", "default"):  # a weights FILE
        weights = absolute(weights)
    class_names = absolute(spec.class_names) if spec.class_names else None
    return dataclasses.replace(spec, name=name, weights=weights, class_names=class_names)
