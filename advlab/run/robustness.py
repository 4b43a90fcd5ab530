"""Worst case over attacks and robustness curves (results' "robustness").

For every column (model x defense x setting) the ledger keeps, per image, whether the model is still
right after each attack and how far its adversarial lies in each norm. Robust accuracy in the worst
case is the share of images that no attack fooled within a threat model (a norm and an eps,
`advlab.core.threat`): AutoAttack's headline number (Croce & Hein, ICML 2020), and what a careful
evaluation reports (Carlini et al., "On Evaluating Adversarial Robustness", arXiv 1902.06705, 2019).
There is one matrix per threat model, and an attack fools an image in it only where its adversarial
lies within eps in that norm: an unbounded or minimal-perturbation attack, or one in another norm,
counts by its measured distances, never at any distance. A defense also gets a "worst setting"
column: per image, the worse of its non-adaptive and adaptive settings.

Curves: rows of one attack that differ only in eps (an `eps: [...]` list in the config) give
accuracy against eps; a minimal-perturbation attack (the Boundary Attack) gives the whole curve from
one run: robust accuracy at every threshold t is the share of images that are right and whose
minimal adversarial distance is above t.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from advlab.core.schema import ADAPTIVE, NO_DEFENSE, NON_ADAPTIVE, WORST_CASE, WORST_SETTING
from advlab.core.threat import ThreatModel, derived_threats

CURVE_POINTS = 64  # thresholds per minimal-perturbation curve


@dataclass(frozen=True)
class Column:
    model: str | None  # in runs with several models
    defense: str | None
    setting: str  # NO_DEFENSE | NON_ADAPTIVE | ADAPTIVE | WORST_SETTING

    def label(self) -> str:
        where = self.defense or "no defense"
        parts = [self.model] if self.model else []
        parts.append(where if self.setting == NO_DEFENSE else f"{where}, {self.setting}")
        return " / ".join(parts)


@dataclass
class Entry:
    correct: torch.Tensor  # (N,) float: the share of the image's predictions still right (1/0 unless randomised)
    distances: dict[str, torch.Tensor]  # norm -> (N,) distance of the adversarial (inf where not fooled)
    method: str
    params: dict[str, Any]
    threat: str
    norm: str
    minimal: bool  # minimises the distance (its distances give a whole curve)
    per_image: bool = True  # False for a universal perturbation (one for all images: a weaker threat)
    bound: tuple[str, float] | None = None  # (norm, eps) every adversarial lies within; None: unbounded

    def within(self, threat: ThreatModel) -> Entry | None:
        """This entry in a threat model: fooled only where the adversarial lies within eps in its norm
        (None if the distances in that norm were not recorded); whole if its own bound lies inside."""
        if threat.contains(self.bound):
            return self
        if threat.norm not in self.distances:
            return None
        within = threat.within(self.distances[threat.norm])  # (N,) its adversarial lies within eps
        return replace(self, correct=torch.where(within, self.correct, torch.ones_like(self.correct)))


@dataclass
class Ledger:
    """Per-image outcomes of every attack in every column of a run."""

    columns: list[Column] = field(default_factory=list)
    clean: dict[Column, torch.Tensor] = field(default_factory=dict)  # (N,) float: right before any attack (share)
    entries: dict[Column, dict[str, Entry]] = field(default_factory=dict)  # column -> attack label -> entry

    def add_column(self, column: Column, clean_correct: torch.Tensor) -> None:
        if column not in self.entries:
            self.columns.append(column)
            self.entries[column] = {}
        self.clean[column] = clean_correct.float().cpu()

    def record(self, column: Column, label: str, entry: Entry) -> None:
        self.entries[column][label] = entry

    def within(self, threat: ThreatModel) -> Ledger:
        """The ledger as one threat model sees it: every entry restricted to it (`Entry.within`)."""
        out = Ledger(list(self.columns), dict(self.clean), {c: {} for c in self.columns})
        for column, entries in self.entries.items():
            for label, e in entries.items():
                restricted = e.within(threat)
                if restricted is not None:
                    out.record(column, label, restricted)
        return out

    def threats(self) -> list[ThreatModel]:
        """The threat models the bounded attacks of this ledger define (one per distinct norm and eps)."""
        return derived_threats(e.bound for entries in self.entries.values() for e in entries.values())

    def with_worst_settings(self) -> Ledger:
        """The ledger plus, per defense with both settings, a column whose entries are the per-image
        worse of the two (an attack counts if it fooled the defense either way)."""
        out = Ledger(list(self.columns), dict(self.clean), {c: dict(e) for c, e in self.entries.items()})
        for column in self.columns:
            if column.setting != NON_ADAPTIVE:
                continue
            adaptive = Column(column.model, column.defense, ADAPTIVE)
            if adaptive not in self.entries:
                continue
            worst = Column(column.model, column.defense, WORST_SETTING)
            out.add_column(worst, torch.minimum(self.clean[column], self.clean[adaptive]))
            out.columns.remove(worst)  # next to the defense's two settings
            out.columns.insert(out.columns.index(adaptive) + 1, worst)
            for label, entry in self.entries[column].items():
                other = self.entries[adaptive].get(label)
                if other is not None:
                    out.record(worst, label, Entry(torch.minimum(entry.correct, other.correct), {}, entry.method,
                                                   entry.params, entry.threat, entry.norm, False, entry.per_image,
                                                   entry.bound))
        return out

    def summary(self, threats: list[ThreatModel] | None = None) -> dict[str, Any]:
        """results["robustness"]: one matrix (attacks and the worst case x columns) per threat model
        (`threats`, or the ones the bounded attacks define), and the curves. Without any threat model
        (only unbounded attacks) one matrix counts every success at any distance, and says so."""
        threats = threats or self.threats()
        matrices = [self._matrix(threat) for threat in (threats or [None])]
        full = self.with_worst_settings()
        columns = [{"model": c.model, "defense": c.defense, "setting": c.setting, "label": c.label(),
                    "clean_accuracy": float(full.clean[c].float().mean()) if len(full.clean[c]) else None}
                   for c in full.columns]
        return {"n": len(next(iter(self.clean.values()))) if self.clean else 0, "columns": columns,
                "matrices": matrices, "curves": eps_curves(self) + minimal_curves(self)}

    def _matrix(self, threat: ThreatModel | None) -> dict[str, Any]:
        full = (self if threat is None else self.within(threat)).with_worst_settings()
        labels: list[str] = []
        for column in full.columns:
            labels += [label for label in full.entries[column] if label not in labels]
        rows = []
        for label in labels:
            entry = next(full.entries[c][label] for c in full.columns if label in full.entries[c])
            counted = "any distance" if threat is None else "all" if threat.contains(entry.bound) else "within eps"
            rows.append({"attack": label, "accuracy": [accuracy(full, c, [label]) for c in full.columns],
                         "counted": counted})
        rows.append({"attack": WORST_CASE, "accuracy": [accuracy(full, c, list(full.entries[c]))
                                                        for c in full.columns]})
        return {"threat": threat.as_dict() if threat is not None else None, "rows": rows}


def accuracy(ledger: Ledger, column: Column, labels: list[str]) -> float | None:
    """The share of the column's images that are clean-correct and that every attack in `labels` left
    right (None if none of them ran in that column): per image the smallest of its clean and attacked
    shares (1/0 for a deterministic model, shares over k predictions for a randomised one), averaged."""
    present = [ledger.entries[column][label] for label in labels if label in ledger.entries[column]]
    if not present:
        return None
    right = ledger.clean[column].clone()
    for entry in present:
        right = torch.minimum(right, entry.correct)
    return float(right.mean()) if len(right) else None


def eps_curves(ledger: Ledger) -> list[dict[str, Any]]:
    """Accuracy against eps for rows of one attack that differ only in eps (per column)."""
    curves = []
    for column in ledger.columns:
        groups: dict[tuple[str, str], list[tuple[float, str, Entry]]] = {}
        for label, entry in ledger.entries[column].items():
            if "eps" not in entry.params:
                continue
            rest = {k: v for k, v in entry.params.items() if k not in ("eps", "step_size")}
            groups.setdefault((entry.method, repr(sorted(rest.items()))), []).append((entry.params["eps"], label,
                                                                                      entry))
        for (method, _), members in groups.items():
            if len({eps for eps, _, _ in members}) < 2:
                continue
            members.sort(key=lambda m: m[0])
            points = [[eps, accuracy(ledger, column, [label])] for eps, label, _ in members]
            curves.append({"kind": "eps", "column": column.label(), "setting": column.setting, "attack": method,
                           "norm": members[0][2].norm, "points": points})
    return curves


def minimal_curves(ledger: Ledger) -> list[dict[str, Any]]:
    """Robust accuracy at every threshold from the per-image minimal distances of minimal attacks."""
    curves = []
    for column in ledger.columns:
        if column.setting == NON_ADAPTIVE:  # transferred examples are not minimal for the defended model
            continue
        for label, entry in ledger.entries[column].items():
            if not entry.minimal or entry.norm not in entry.distances:
                continue
            clean = ledger.clean[column]
            left = torch.minimum(clean, entry.correct)  # (N,) what stays right where the adversarial counts
            dist = torch.where((clean > 0) & (entry.correct < 1), entry.distances[entry.norm].float().cpu(),
                               torch.tensor(float("inf")))  # (N,) the smallest fooling distance, inf if none
            finite = dist[torch.isfinite(dist)]
            if finite.numel() == 0:
                continue
            top = float(finite.max())
            thresholds = torch.linspace(0.0, top * 1.05, CURVE_POINTS)
            points = [[float(t), float(torch.where(dist <= t, left, clean).mean())] for t in thresholds]
            curves.append({"kind": "minimal", "column": column.label(), "setting": column.setting, "attack": label,
                           "norm": entry.norm, "points": points})
    return curves


def attack_labels(specs: list[Any]) -> list[str]:
    """A readable label per attack spec: its method, plus the settings that tell apart several
    attacks of one method (e.g. 'pgd eps=0.0157'), or method-i when nothing does."""
    labels = []
    for i, spec in enumerate(specs):
        same = [s for s in specs if s.method == spec.method]
        if len(same) == 1:
            labels.append(spec.method)
            continue
        differing = sorted(k for k in {k for s in same for k in _settings(s)}
                           if len({repr(_settings(s).get(k)) for s in same}) > 1)
        text = ", ".join(f"{k}={_short(_settings(spec).get(k))}" for k in differing)
        labels.append(f"{spec.method} {text}" if text else f"{spec.method}-{i}")
    return labels


def _settings(spec: Any) -> dict[str, Any]:
    return {**spec.params, "target_class": spec.target_class}


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def entry(correct: torch.Tensor, dist: dict[str, torch.Tensor], spec: Any, attack: Any, threat: str) -> Entry:
    """A ledger entry from an attack's per-image verdicts (N,) (bool, or float shares of right predictions) and
    distances (norm -> (N,))."""
    share = correct.float().cpu()  # (N,) 1/0, or a randomised model's share of right predictions
    fooled = share < 1
    inf = torch.tensor(float("inf"))
    return Entry(correct=share,
                 distances={k: torch.where(fooled, v.float().cpu(), inf) for k, v in dist.items()},
                 method=spec.method, params=attack.params(), threat=threat, norm=getattr(attack, "norm", "l2"),
                 minimal=bool(getattr(attack, "minimal_perturbation", False)),
                 per_image=not attack.universal, bound=attack.bound())
