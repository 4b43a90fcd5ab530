"""results.json -> the plain values the template shows (header, summary rows, params, defenses)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advlab.report.defenses import defense_table, defense_views
from advlab.report.gallery import Gallery, build_gallery
from advlab.report.robustness import curves_view, matrix_views, warnings_view
from advlab.report.universal import UniversalView, is_universal, transfer_view, universal_view
from advlab.report.views import view_for, views_in
from advlab.view import fmt
from advlab.view.task_view import Column, TaskView


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
    params: list[tuple[str, str]]
    gallery: Gallery
    model: str = fmt.MISSING
    baseline: str | None = None
    universal: UniversalView | None = None
    wall_s: str = fmt.MISSING
    images_per_s: str = fmt.MISSING
    skipped: str | None = None  # why the attack did not run (e.g. a model without gradients)
    predictions: str | None = None  # a randomised model: its accuracy over k predictions, mean and spread


@dataclass
class Summary:
    """The summary table of one task's rows: its view's columns (those some row fills) and glossary."""

    label: str
    columns: list[Column]
    rows: list[tuple[AttackView, list[str]]]  # each row with its cells, one per column
    glossary: list[tuple[str, str]] = field(default_factory=list)


def is_transfer_key(key: str) -> bool:
    """results' cross-model tables: "transfer", or "transfer_<x>" (each attack's `transfer_key`)."""
    return key == "transfer" or key.startswith("transfer_")


def header(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, text) pairs describing the run, for the page header."""
    model, data = fmt.as_dict(results.get("model")), fmt.as_dict(results.get("data"))
    held_out = fmt.as_dict(data.get("eval"))
    model_extra = fmt.joined(
        model.get("task"),
        f"{model['num_classes']} {view_for(model).class_noun}" if model.get("num_classes") is not None else None,
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
    """Rows (name, weights, input, clean score) of the top-level `models` list of a multi-model run;
    each model's clean score is its task's headline number (`clean_<score>`)."""
    rows = []
    for m in models if isinstance(models, list) else []:
        m = fmt.as_dict(m)
        if m:
            key = next((k for k in m if k.startswith("clean_")), "")
            rows.append({"name": fmt.plain(m.get("name")), "weights": fmt.plain(m.get("weights")),
                         "input_size": fmt.plain(m.get("input_size")), "clean": score_text(m, key, view_for(m))})
    return rows


def predictions_text(predictions: Any) -> str | None:
    """'Over 10 predictions per image: accuracy 61.0% ± 2.1 (mean ± std over the rounds).' for a randomised model."""
    found = fmt.as_dict(predictions)
    if not found:
        return None
    return (f"Over {fmt.plain(found.get('k'))} predictions per image (a randomised model): accuracy on its "
            f"adversarials {fmt.pct(found.get('accuracy_mean'))} ± {fmt.num(100 * float(found.get('accuracy_std') or 0))}"
            " points (mean ± standard deviation over the rounds).")


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


def attack_view(run_dir: Path, attack: dict[str, Any], index: int,
                class_names: list[str] | None = None) -> AttackView:
    """Everything the page shows about one attack row."""
    method = fmt.row_name(attack)  # a control row names its control ("dag · permuted control")
    baseline = fmt.plain(attack["baseline"]) if attack.get("baseline") else None
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
        params=params,
        gallery=build_gallery(run_dir, attack, title=f"{method} ({setting})", universal=is_universal(attack),
                              class_names=class_names),
        model=model,
        baseline=baseline,
        universal=universal_view(run_dir, attack, title=f"{method} ({model})" if attack.get("model") else method),
        wall_s=fmt.num(attack.get("wall_s")),
        images_per_s=fmt.integer(attack.get("model_images_per_s")),
        skipped=fmt.plain(attack["skipped"]) if attack.get("skipped") else None,
        predictions=predictions_text(attack.get("predictions")),
    )


def summaries(attacks: list[dict[str, Any]], views: list[AttackView]) -> list[Summary]:
    """One summary table per task among the rows, in order of first appearance, each with the columns
    and glossary of that task's view."""
    out = []
    for view in views_in(attacks):
        mine = [(a, v) for a, v in zip(attacks, views) if view_for(a) is view]
        columns = [c for c in view.columns if c.shown([a for a, _ in mine])]
        hidden = {c.header for c in view.columns if c not in columns}  # their glossary entries go too
        glossary = [(term, text) for term, text in view.glossary if term not in hidden]
        out.append(Summary(view.label, columns, [(v, [c.cell(a) for c in columns]) for a, v in mine], glossary))
    return out


def score_text(row: dict[str, Any], key: str, view: TaskView) -> str:
    """'55.8% mIoU': a clean score with the name of its task's headline number."""
    return fmt.joined(fmt.pct(row.get(key)), view.score_label, sep=" ")


def build_context(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """The template context for one run."""
    names = fmt.as_dict(results.get("model")).get("class_names")
    class_names = [str(n) for n in names] if isinstance(names, list) else None
    attacks = [a if isinstance(a, dict) else {} for a in (results.get("attacks") or [])]
    files = [name for name in ("config.yaml", "log.txt") if (run_dir / name).is_file()]
    views = [attack_view(run_dir, a, i, class_names) for i, a in enumerate(attacks)]
    return {
        "name": fmt.plain(results.get("name") or run_dir.name),
        "header": header(results),
        "attacks": views,
        "summaries": summaries(attacks, views),
        "model_column": any(a.get("model") is not None for a in attacks),
        "models": models_table(results.get("models")),
        "transfers": [v for v in (transfer_view(results[key]) for key in results if is_transfer_key(key)) if v],
        "defenses": defense_table(results.get("defenses")),
        "defense_views": defense_views(run_dir, results.get("defenses"), attacks),
        "files": files,
        "warnings": warnings_view(results.get("warnings")),
        "randomised": next((fmt.as_dict(a.get("predictions")).get("k") for a in attacks
                            if fmt.as_dict(a.get("predictions"))), None),
        "matrices": matrix_views(results.get("robustness"), results.get("model"),
                                 view_for(fmt.as_dict(results.get("model"))).right, attacks),
        "curves": curves_view(results.get("robustness")),
    }
