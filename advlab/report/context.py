"""results.json -> the plain values the template shows (header, summary rows, params, defenses)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlab.report import fmt
from advlab.report.defenses import defense_table, defense_views
from advlab.report.gallery import Gallery, build_gallery
from advlab.report.robustness import curves_view, matrix_views, warnings_view
from advlab.report.universal import UniversalView, is_universal, transfer_view, universal_view
from advlab.report.views import Column, task_columns, view_for


@dataclass
class AttackView:
    """One attack row of results.json, formatted."""

    anchor: str
    title: str
    method: str
    backend: str
    setting: str
    setting_detail: str
    criterion: str
    metrics: dict[str, str]
    params: list[tuple[str, str]]
    gallery: Gallery
    model: str = fmt.MISSING
    baseline: str | None = None
    universal: UniversalView | None = None
    task_cells: list[str] = field(default_factory=list)  # one per column of `task_columns`, "—" off-task



def header(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs describing the run, for the page header."""
    model, data = fmt.as_dict(results.get("model")), fmt.as_dict(results.get("data"))
    held_out = fmt.as_dict(data.get("eval"))
    model_extra = fmt.joined(
        model.get("task"),
        f"{model['num_classes']} classes" if model.get("num_classes") is not None else None,
        f"input {model['input_size']}" if model.get("input_size") is not None else None,
        sep=", ",
    )
    return [
        ("created", fmt.plain(results.get("created"))),
        ("model", fmt.joined(model.get("name"), model.get("weights"), sep=" / ")
         + ("" if model_extra == fmt.MISSING else f" ({model_extra})")),
        ("data", fmt.joined(
            data.get("name"),
            f"n = {data['n']}" if data.get("n") is not None else None,
            f"labels: {data['label_source']}" if data.get("label_source") else None,
        )),
        *([("held-out data", fmt.joined(
            held_out.get("name"), f"n = {held_out['n']}" if held_out.get("n") is not None else None,
        ))] if held_out else []),
        ("device", fmt.plain(results.get("device"))),
        ("torch", fmt.plain(results.get("torch"))),
        ("precision", fmt.plain(results.get("precision"))),
        ("seed", fmt.plain(results.get("seed"))),
        ("advlab", fmt.plain(results.get("advlab_version"))),
    ]


def models_table(models: Any) -> list[dict[str, str]]:
    """Rows (name, weights, input, clean accuracy) of the top-level `models` list of a multi-model run."""
    rows = []
    for m in models if isinstance(models, list) else []:
        m = fmt.as_dict(m)
        if m:
            rows.append({"name": fmt.plain(m.get("name")), "weights": fmt.plain(m.get("weights")),
                         "input_size": fmt.plain(m.get("input_size")),
                         "clean_accuracy": fmt.pct(m.get("clean_accuracy"))})
    return rows


def setting_text(attack: dict[str, Any]) -> tuple[str, str]:
    """(setting, detail): 'plain model' or 'defended', and which defense / adaptive attack."""
    defense, adaptive = attack.get("defense"), attack.get("adaptive")
    setting = attack.get("setting") or ("defended" if defense else "plain model")
    if not defense:
        return str(setting), (f"adaptive: {fmt.plain(adaptive)}" if adaptive else "")
    name = defense.get("method") if isinstance(defense, dict) else defense
    variant = attack.get("defense_variant")
    if variant not in (None, ""):
        name = f"{fmt.plain(name)} ({fmt.plain(variant)})"
    adaptive_text = f"adaptive: {fmt.plain(adaptive)}" if adaptive else "non-adaptive"
    return str(setting), f"defense: {fmt.plain(name)}, {adaptive_text}"


def metrics(attack: dict[str, Any], clean_accuracy: Any) -> dict[str, str]:
    """The summary-table cells of one attack."""
    return {
        "clean_accuracy": fmt.pct(attack.get("clean_accuracy", clean_accuracy)),
        "success_rate": fmt.pct(attack.get("success_rate")),
        "fooling_ratio": fmt.pct(attack.get("fooling_ratio")),
        "fooling_ratio_train": fmt.pct(attack.get("fooling_ratio_train")),
        "accuracy": fmt.pct(attack.get("accuracy")),
        "median_l2": fmt.num(attack.get("median_l2")),
        "median_linf": fmt.num(attack.get("median_linf")),
        "median_mse": fmt.sci(attack.get("median_mse")),
        "queries_median": fmt.integer(attack.get("queries_median")),
        "wall_s": fmt.num(attack.get("wall_s")),
        "model_images_per_s": fmt.integer(attack.get("model_images_per_s")),
    }


def attack_view(run_dir: Path, attack: dict[str, Any], index: int, clean_accuracy: Any,
                class_names: list[str] | None = None, columns: list[Column] | None = None) -> AttackView:
    """Everything the page shows about one attack row."""
    method = fmt.plain(attack.get("method"))
    baseline = fmt.plain(attack["baseline"]) if attack.get("baseline") else None
    if baseline:
        method = fmt.joined(method, "random baseline")
    model = fmt.plain(attack["model"]) if attack.get("model") is not None else fmt.MISSING
    setting, detail = setting_text(attack)
    criterion = fmt.plain(attack.get("criterion"))
    if attack.get("target_class") is not None:
        criterion += f" → class {fmt.plain(attack['target_class'])}"
    title = fmt.joined(method, attack.get("model"), attack.get("backend"), setting, detail or None)
    params = [(str(k), fmt.plain(v)) for k, v in fmt.as_dict(attack.get("params")).items()]
    return AttackView(
        anchor=f"attack-{index}",
        title=title,
        method=method,
        backend=fmt.plain(attack.get("backend")),
        setting=setting,
        setting_detail=detail,
        criterion=criterion,
        metrics=metrics(attack, clean_accuracy),
        params=params,
        gallery=build_gallery(run_dir, attack, title=f"{method} ({setting})", universal=is_universal(attack),
                              class_names=class_names),
        model=model,
        baseline=baseline,
        universal=universal_view(run_dir, attack, title=f"{method} ({model})" if attack.get("model") else method),
        task_cells=[column.cell(attack) if column in view_for(attack).columns else fmt.MISSING
                    for column in columns or []],
    )


def build_context(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """The template context for one run."""
    clean_accuracy = fmt.as_dict(results.get("clean")).get("accuracy")
    names = fmt.as_dict(results.get("model")).get("class_names")
    class_names = [str(n) for n in names] if isinstance(names, list) else None
    attacks = [a if isinstance(a, dict) else {} for a in (results.get("attacks") or [])]
    files = [name for name in ("config.yaml", "log.txt") if (run_dir / name).is_file()]
    columns = task_columns(attacks)
    return {
        "name": fmt.plain(results.get("name") or run_dir.name),
        "header": header(results),
        "clean_accuracy": fmt.pct(clean_accuracy),
        "attacks": [attack_view(run_dir, a, i, clean_accuracy, class_names, columns) for i, a in enumerate(attacks)],
        "task_columns": columns,
        "model_column": any(a.get("model") is not None for a in attacks),
        "universal_column": any(is_universal(a) for a in attacks),
        "models": models_table(results.get("models")),
        "transfers": [v for v in (transfer_view(results.get(key)) for key in ("transfer", "transfer_dag")) if v],
        "defenses": defense_table(results.get("defenses")),
        "defense_views": defense_views(run_dir, results.get("defenses"), attacks),
        "files": files,
        "warnings": warnings_view(results.get("warnings")),
        "matrices": matrix_views(results.get("robustness")),
        "curves": curves_view(results.get("robustness")),
    }
