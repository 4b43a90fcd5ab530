"""The top of the report: warnings from the sanity checks, the robustness matrix (attacks and the worst
case x model / defense / setting, colour-scaled) and the robustness curves (accuracy against eps, and
against the threshold for minimal-perturbation attacks)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from matplotlib.figure import Figure

from advlab.core.schema import WORST_CASE
from advlab.view import fmt
from advlab.view.images import data_uri
from advlab.view.plots import figure_png


@dataclass
class Cell:
    text: str
    style: str  # inline background colour, or ""


@dataclass
class Matrix:
    threat: str  # the threat model's label, e.g. 'linf eps 0.03137 (8/255)'
    columns: list[str]
    clean: list[str]
    rows: list[tuple[str, list[Cell], bool, bool]]  # (attack, cells, is the worst case, counted only within eps)
    published: str | None = None  # a leaderboard's figures for the model in this threat model (RobustBench)
    right: str = ""  # when one image counts as right: the task's per-image verdict the matrix counts
    tests: list[dict[str, str]] = field(default_factory=list)  # the binarization tests of this threat model


def binarization_view(attacks: Any) -> dict[str, list[dict[str, str]]]:
    """The attack rows' binarization tests by threat label: which evaluation (attack, model, defense, setting),
    the share of binarized models it fooled, and the paper's verdict."""
    out: dict[str, list[dict[str, str]]] = {}
    for row in (fmt.as_dict(a) for a in attacks if isinstance(attacks, list)):
        test = fmt.as_dict(row.get("binarization_test"))
        if not test:
            continue
        where = fmt.row_column(row)
        label = fmt.plain(fmt.as_dict(test.get("threat")).get("label"))
        if test.get("skipped"):
            fooled, verdict = "—", f"not run: {fmt.plain(test['skipped'])}"
        else:
            fooled = f"{fmt.pct(test.get('success_rate'))} of {fmt.plain(test.get('n'))}"
            verdict = {True: "passed", False: "FAILED"}.get(test.get("passed"), "no binarized model could be built")
        extra = f" ({fmt.plain(test.get('setup_failed'))} not built)" if test.get("setup_failed") else ""
        out.setdefault(label, []).append({"attack": fmt.row_name(row), "where": where, "fooled": fooled + extra,
                                          "verdict": verdict, "failed": "yes" if test.get("passed") is False else ""})
    return out


def warnings_view(warnings: Any) -> list[dict[str, Any]]:
    """The sanity checks' warnings as plain strings, one entry per (check, where) with its messages."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for w in warnings if isinstance(warnings, list) else []:
        w = fmt.as_dict(w)
        if not w:
            continue
        key = (fmt.plain(w.get("check")), fmt.plain(w.get("where")))
        group = groups.setdefault(key, {"check": key[0], "where": key[1], "messages": [],
                                        "advice": fmt.plain(w.get("advice"))})
        group["messages"].append(fmt.plain(w.get("message")))
    return list(groups.values())


def _colour(value: Any) -> str:
    """Red (0) through yellow to green (1), light enough for black text."""
    v = fmt.finite(value)
    if v is None:
        return ""
    v = min(max(v, 0.0), 1.0)
    red, green = (255, int(120 + 270 * v)) if v < 0.5 else (int(255 - 200 * (v - 0.5)), 255)
    return f"background: rgb({min(red, 255)}, {min(green, 255)}, 160)"


def matrix_views(robustness: Any, model: Any = None, right: str = "", attacks: Any = None) -> list[Matrix]:
    """results["robustness"] as the matrices the page shows, one per threat model; [] without one. The
    model's published figures (results["model"]["published"]) and the attack rows' binarization tests go under
    the matrix of their threat model."""
    tests = binarization_view(attacks)
    rob = fmt.as_dict(robustness)
    published = fmt.as_dict(fmt.as_dict(model).get("published"))
    published_threat = fmt.as_dict(published.get("threat_model")).get("label")
    columns = [fmt.as_dict(c) for c in rob.get("columns") or []]
    found = rob.get("matrices") if isinstance(rob.get("matrices"), list) else [{"rows": rob.get("rows")}]
    out = []
    for m in (fmt.as_dict(m) for m in found):
        rows = [fmt.as_dict(r) for r in m.get("rows") or []] if isinstance(m.get("rows"), list) else []
        if not columns or not rows:
            continue
        threat = fmt.as_dict(m.get("threat"))
        cells_of = []
        for row in rows:
            values = row.get("accuracy") if isinstance(row.get("accuracy"), list) else []
            cells = [Cell(fmt.pct(v), _colour(v)) for v in values]
            cells_of.append((fmt.plain(row.get("attack")), cells, row.get("attack") == WORST_CASE,
                             row.get("counted") == "within eps"))
        label = fmt.plain(threat.get("label")) if threat.get("label") else "none: every success counts, at any distance"
        out.append(Matrix(label, [fmt.plain(c.get("label")) for c in columns],
                          [fmt.pct(c.get("clean_accuracy")) for c in columns], cells_of,
                          published_text(published) if published_threat and published_threat == label else None,
                          right, tests.get(label, [])))
    return out


def published_text(published: dict[str, Any]) -> str:
    """'RobustBench leaderboard (robustbench 1.1.1), cifar10: clean 83.34%, AutoAttack 43.21%' ('-' where it has
    no figure): the numbers to compare this run's clean row and worst case with."""
    return (f"{fmt.plain(published.get('source'))}, {fmt.plain(published.get('dataset'))}: "
            f"clean {fmt.pct(published.get('clean_accuracy'), 2)}, {fmt.plain(published.get('attack'))} "
            f"{fmt.pct(published.get('robust_accuracy'), 2)}")


def curves_view(robustness: Any) -> list[dict[str, str]]:
    """One plot per curve kind and attack: accuracy against eps (one line per column), or robust
    accuracy against the distance threshold for minimal-perturbation attacks."""
    curves = [fmt.as_dict(c) for c in fmt.as_dict(robustness).get("curves") or []]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for c in curves:
        if isinstance(c.get("points"), list) and c["points"]:
            groups.setdefault((str(c.get("kind")), str(c.get("attack")), str(c.get("norm"))), []).append(c)
    plots = []
    for (kind, attack, norm), members in groups.items():
        fig = Figure(figsize=(6.4, 3.6), dpi=100, layout="constrained")
        ax = fig.add_subplot()
        for c in members:
            pts = [p for p in c["points"] if isinstance(p, list) and len(p) == 2 and p[1] is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o" if kind == "eps" else None,
                    markersize=3, label=str(c.get("column")), drawstyle="steps-post" if kind == "minimal" else None)
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("accuracy")
        ax.set_xlabel(f"eps ({norm})" if kind == "eps" else f"{norm} threshold")
        title = (f"{attack}: accuracy against eps" if kind == "eps"
                 else f"{attack}: robust accuracy at every {norm} threshold (from minimal perturbations)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        plots.append({"title": title, "uri": data_uri(figure_png(fig))})
    return plots
