"""An experiment: models x attacks x defenses on one data set. Writes the run directory
(config.yaml, results.json, arrays/, log.txt, index.html); `resume` continues a killed run."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import platform
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.core import atomic, distributed
from advlab.core.attack import Attack
from advlab.core.companion import Companion, companion_for
from advlab.core.config import AttackSpec, DefenseSpec, ModelSpec, RunConfig
from advlab.core.config_yaml import load_config, to_yaml
from advlab.core.defense import Defended, Defense
from advlab.core.device import apply_precision, batch_does_not_fit, device_name, out_of_memory, resolve_device
from advlab.core.errors import AdvlabError, Interrupted
from advlab.core.paths import absolute, absolute_model, absolute_settings, absolute_source
from advlab.core.registry import PluginInfo, get_attack, get_defense
from advlab.core.results import SCHEMA, results_from_dict
from advlab.core.schema import ADAPTIVE, NO_DEFENSE, WHITE_BOX
from advlab.core.settings import attack_defaults, instantiate
from advlab.core.version import __version__
from advlab.data.memory import images_in_memory
from advlab.data.sources import load_images
from advlab.report import render_html, render_report
from advlab.run.binarization import binarization_warnings, check_binarizable
from advlab.run.defense_eval import build_defense, defense_label, evaluate_defense
from advlab.run.model_threat import with_model_threat
from advlab.run.randomised import clean_shares, prediction_count
from advlab.run.robustness import Column, Ledger, attack_labels, entry
from advlab.run.rows import BareRow, RowContext, run_attack, skipped_row
from advlab.run.runlock import RunLock, own_files
from advlab.run.sanity import GRADIENTS_BLOCKED, PROBE_IMAGES, gradients_blocked, probe, result_checks
from advlab.tasks import HeldOut, Subject, get_task
from advlab.view import fmt
from advlab.zoo.models import load_model

log = logging.getLogger("advlab")


def build_attack(spec: AttackSpec) -> Attack:
    """Instantiate a registered attack; bad settings become one line naming the setting."""
    return instantiate("attack", spec.method, get_attack(spec.method).cls, spec.params)


def new_run_dir(cfg: RunConfig) -> tuple[Path, RunLock]:
    """The run directory, created only now that everything was validated, and its lock: `--out` must
    be new or an empty directory (advlab never writes into a folder of the user's), the default is
    reports/<name>-<YYYYmmdd-HHMMSS>. Checked again once locked: of two processes started on the same
    `--out`, the second is told which process is writing it."""
    if cfg.out:
        run_dir = Path(cfg.out).expanduser()
        check_writable_dir(run_dir, "--out")
    else:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_dir = Path("reports") / f"{cfg.name}-{stamp}"
        k = 1
        while run_dir.exists():
            k += 1
            run_dir = Path("reports") / f"{cfg.name}-{stamp}-{k}"
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunLock(run_dir).claim()
    try:
        check_writable_dir(run_dir, "--out")
    except AdvlabError:
        lock.release()
        raise
    return run_dir, lock


def remove_chunks(arrays: Path) -> None:
    """Delete the resume checkpoints (arrays/*.chunks/) of a finished run: results.json and the rows'
    arrays hold what the report and the user read, so the run's disk stays bounded by the report's
    images, not by N (every adversarial image is kept only with --save-adversarials)."""
    for folder in arrays.glob("*.chunks"):
        shutil.rmtree(folder, ignore_errors=True)


def check_writable_dir(path: Path, flag: str) -> None:
    """A directory advlab may create or fill: absent, or empty. A run advlab made is resumed, not reused."""
    if path.exists() and not path.is_dir():
        raise AdvlabError(f"{flag} {path} is a file; give a directory path")
    if not path.is_dir() or not any(not own_files(p) for p in path.iterdir()):
        return
    if (path / "config.yaml").is_file() or (path / "results.json").is_file():
        state = "a finished run" if (path / "results.json").is_file() else "an unfinished run"
        raise AdvlabError(f"{flag} {path} already holds {state}; continue it with `advlab run --resume {path}`, "
                          f"or pick another {flag}")
    raise AdvlabError(f"{flag} {path} is not empty and holds no advlab run; advlab only writes into a new or empty "
                      f"directory: pick another {flag}")


@dataclass(frozen=True)
class InMemory:
    """What a Python caller passes as objects instead of names (`advlab.evaluate`): the wrapped model that
    stands for `cfg.model`, and images in any form `advlab.data.memory.images_in_memory` takes."""

    model: nn.Module | None = None
    data: Any = None


def run_experiment(cfg: RunConfig, *, resume: Path | None = None, lock: RunLock | None = None,
                   given: InMemory = InMemory()) -> Path:
    """Run (or resume: `lock` is then the resumed directory's, taken by the caller) an experiment and
    return its run directory. Everything that can be checked (settings, models, data, target classes,
    starting images) is checked before anything is written. `given` objects replace the model and data
    that `cfg` names."""
    distributed.init_from_env()  # under torchrun: join the group, each rank computes its share of the chunks
    cfg = with_model_threat(cfg)  # a RobustBench entry's leaderboard threat model where the run names none
    attacks = [build_attack(spec) for spec in cfg.attacks]  # fail on bad settings before any heavy work
    defenses = [build_defense(spec) for spec in cfg.defenses]
    device = resolve_device(cfg.device)
    autocast = apply_precision(cfg.precision)
    with fitting_memory(cfg.batch_size, device):
        subjects = [_subject(spec, cfg, device, autocast, given) for spec in (cfg.models or [cfg.model])]
        _preflight(cfg, attacks, defenses, subjects, device)
    run_dir = resume
    if run_dir is None:
        created = None
        if distributed.is_main():
            created, lock = new_run_dir(cfg)
            atomic.write_text(created / "config.yaml", to_yaml(_resolved(cfg)))
        run_dir = Path(distributed.from_main(str(created) if created else None))  # rank 0's, on every rank
    handler = log_to(run_dir / "log.txt") if distributed.is_main() else logging.NullHandler()
    try:
        for subject in subjects:
            log.info("%s on %d images from %s, device %s", subject.model.name, len(subject.data), subject.data.source,
                     device_name(device))
        with fitting_memory(cfg.batch_size, device):
            return _execute(cfg, attacks, defenses, subjects, device, run_dir)
    except AdvlabError as exc:
        log.error("run stopped: %s", exc)  # the run directory says why it is incomplete
        raise
    except KeyboardInterrupt:
        log.error("run interrupted; finished chunks are kept")
        raise Interrupted(f"advlab run --resume {shlex.quote(str(run_dir.resolve()))}") from None
    except OSError as exc:  # a full disk, a folder that became read-only, memory refused: the machine, not the run
        where = f" ({exc.filename})" if exc.filename else ""
        log.error("run stopped: %s%s", exc.strerror or exc, where)
        remedy = "" if exc.errno == errno.ENOMEM else "free space, then "  # ENOMEM: not the disk
        raise AdvlabError(f"{exc.strerror or exc}{where}; finished chunks are kept: {remedy}continue "
                          f"with `advlab run --resume {shlex.quote(str(run_dir.resolve()))}`") from None
    finally:
        if distributed.is_main():
            log.removeHandler(handler)
        handler.close()
        if lock is not None:
            lock.release()


def _preflight(cfg: RunConfig, attacks: list[Attack], defenses: list[Defense], subjects: list[Subject],
               device: torch.device) -> None:
    """Every attack planned and every defense run on one image, for every model, before anything is written."""
    for subject in subjects:
        for spec, attack in zip(cfg.attacks, attacks):
            check_task(get_attack(spec.method), subject)
            attack.prepare(subject.model, tuple(subject.data.images.shape[1:]), device)
            subject.task.plan(spec, attack, subject, device, seed=cfg.seed)
        if cfg.binarization_test:
            check_binarizable(subject.model, subject.data.images[:1].to(device))
        for dspec, defense in zip(cfg.defenses, defenses):  # a defense that does not fit fails here, on one image
            check_task(get_defense(dspec.method), subject)
            subject.task.predict(Defended(subject.model, defense).to(device).eval(), subject.data.images[:1], 1, device)


@contextlib.contextmanager
def fitting_memory(batch_size: int, device: torch.device) -> Iterator[None]:
    """An allocator that refuses memory inside becomes one line naming the batch size that would halve
    the activations (`batch_does_not_fit`), instead of an internal error."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if not out_of_memory(exc):
            raise
        raise batch_does_not_fit(batch_size, device) from None


def check_task(info: PluginInfo, subject: Subject) -> None:
    """The registry's declared tasks are enforced: a plugin runs only on the tasks it declares."""
    if not info.supports(subject.task.name):
        raise AdvlabError(f"{info.kind} {info.name} does not support the {subject.task.name} task of "
                          f"{subject.model.name} (it declares {', '.join(sorted(info.tasks))}); "
                          f"see `advlab list --task {subject.task.name}`")


def resume_experiment(run_dir: Path, given: InMemory = InMemory()) -> Path:
    """Continue a stopped run, holding its directory's lock. A finished one (results.json is written
    last) is left as it is: its report is rendered again only if index.html is missing."""
    if not (run_dir / "config.yaml").is_file():
        raise AdvlabError(f"--resume {run_dir}: no config.yaml there; give a run directory advlab wrote")
    distributed.init_from_env()
    lock = RunLock(run_dir).claim() if distributed.is_main() else None
    try:
        if (run_dir / "results.json").is_file():
            missing = not (run_dir / "index.html").is_file()
            if missing and distributed.is_main():
                render_report(run_dir)
            if distributed.is_main():
                remove_chunks(run_dir / "arrays")  # checkpoints left by a stop after the last step
            log.warning("%s is already finished; nothing to resume%s", run_dir,
                        " (its missing report was rendered again)" if missing else "")
            return run_dir
        if distributed.is_main():
            atomic.remove_leftovers(run_dir)  # half-written files of a killed process
        return run_experiment(load_config(run_dir / "config.yaml"), resume=run_dir, lock=lock, given=given)
    finally:
        if lock is not None:
            lock.release()


def _execute(cfg: RunConfig, attacks: list[Attack], defenses: list[Defense], subjects: list[Subject],
             device: torch.device, run_dir: Path) -> Path:
    first = subjects[0]
    results: dict[str, Any] = {
        "schema": SCHEMA, "advlab_version": __version__, "name": cfg.name,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),  # python 3.10 has no datetime.UTC
        "seed": cfg.seed,
        "device": device_name(device), "torch": torch.__version__, "python": platform.python_version(),
        "precision": cfg.precision, "batch_size": cfg.batch_size, "world_size": distributed.world_size(),
        "model": first.model.describe(),
        "data": {"name": first.data.source, "n": len(first.data), "label_source": first.data.label_source},
        "clean": {first.task.score_name: first.task.score(first.clean, first.labels)},
        "attacks": [], "defenses": [],
    }
    notes = [*cfg.notes, *(note for s in subjects for note in s.data.notes)]
    if notes:  # what advlab chose or changed on the user's behalf
        results["notes"] = list(dict.fromkeys(notes))
    if first.held_out is not None:
        results["data"]["eval"] = {"name": first.held_out.data.source, "n": len(first.held_out.data)}
    if len(subjects) > 1:
        results["models"] = [{**s.model.describe(), f"clean_{s.task.score_name}": s.task.score(s.clean, s.labels)}
                             for s in subjects]
    arrays = run_dir / "arrays"
    companions = [companion_for(spec.method) for spec in cfg.attacks]  # one per attack, across the models
    rows_by_companion: dict[type[Companion], list[tuple[int, dict[str, Any]]]] = {}
    labels = attack_labels(cfg.attacks)  # one name per attack: matrix rows and defense keys alike
    ledger, warnings = Ledger(), []
    for m, subject in enumerate(subjects):
        suffix = f"-m{m}" if len(subjects) > 1 else ""
        context = RowContext(model=subject.model.name if len(subjects) > 1 else None)
        column = Column(context.model, None, NO_DEFENSE)
        clean_correct = clean_shares(subject, cfg.batch_size, device)  # (N,) 1/0, or shares over k predictions
        if clean_correct is not None:
            ledger.add_column(column, clean_correct)
        bare: list[BareRow] = []
        blocked = gradients_blocked(subject.model, subject.data.images[:1].to(device))
        for i, (spec, attack, companion) in enumerate(zip(cfg.attacks, attacks, companions)):
            tag = f"{spec.method}-{i}{suffix}"
            if blocked and get_attack(spec.method).threat == WHITE_BOX:  # nothing to differentiate: said, not run
                _add_row(results, skipped_row(spec, attack, subject, context, GRADIENTS_BLOCKED), subject)
                continue
            outcomes = run_attack(tag, spec, attack, companion, subject, cfg, device, arrays, context)
            for outcome in outcomes:
                _add_row(results, outcome.row, subject)
            bare.append(BareRow(labels[i], tag, spec, attack, companion, outcomes[0]))
            rows_by_companion.setdefault(type(companion), []).append((m, outcomes[0].row))
            if clean_correct is not None:
                right = outcomes[0].right
                assert right is not None  # the task has a verdict: it gave clean_correct
                ledger.record(column, labels[i], entry(right, outcomes[0].dist, spec, attack,
                                                       get_attack(spec.method).threat))
                for part, fooled, threat in outcomes[0].parts:  # e.g. standard's cumulative components
                    kept = ~fooled if subject.predictions == 1 else \
                        torch.where(fooled, right, torch.ones_like(right))  # a randomised model's shares
                    ledger.record(column, f"{labels[i]}: {part}", entry(kept, outcomes[0].dist, spec, attack, threat))
        verdict = subject.task if clean_correct is not None else None  # the unbounded probe needs one
        probed = subject.data.images[:PROBE_IMAGES]  # (P, C, H, W): the few images the sanity probes read
        if subject.task.probes:
            warnings += probe(subject.model, probed, subject.labels, column.label(), device, task=verdict)
        for k, (dspec, defense) in enumerate(zip(cfg.defenses, defenses)):
            if dspec.adaptive and subject.task.probes:
                warnings += probe(Defended(subject.model, defense).to(device).eval(), probed, subject.labels,
                                  Column(context.model, defense_label(defense), ADAPTIVE).label(), device,
                                  task=verdict)
            row, adaptive_rows = evaluate_defense(k + len(cfg.defenses) * m, dspec, defense, subject, bare, cfg,
                                                  device, arrays, context, ledger)
            results["defenses"].append(row)
            for adaptive in adaptive_rows:
                _add_row(results, adaptive, subject)
    if len(subjects) > 1 and distributed.is_main():  # transfer tables read the arrays rank 0 wrote
        for cls, rows in rows_by_companion.items():
            transfer = cls.transfer(subjects, rows, run_dir, cfg.batch_size, device)
            if transfer is not None:
                results[cls.transfer_key] = transfer
    if ledger.columns:
        results["robustness"] = ledger.summary(cfg.threat)
    results["warnings"] = (warnings + result_checks(ledger, results["attacks"], cfg.threat)
                           + binarization_warnings(results["attacks"]))
    for found in results["warnings"]:
        log.warning("check %s (%s): %s", found["check"], found["where"], found["message"])
    text = results_from_dict(results).to_json()  # typed: every key of the schema checked as it is written
    if distributed.is_main():  # the other ranks of a sharded run wrote nothing but their chunks
        atomic.write_text(run_dir / "index.html", render_html(run_dir, json.loads(text)))  # as read back later
    distributed.barrier()  # every rank has read the chunks it needs
    if distributed.is_main():  # completion is one atomic last step: a run is finished once results.json is there
        atomic.write_text(run_dir / "results.json", text)
        remove_chunks(arrays)
    return run_dir


def _add_row(results: dict[str, Any], row: dict[str, Any], subject: Subject) -> None:
    results["attacks"].append(row)
    log.info("%s on %s (%s): success %s, %s %s, %.1f s", fmt.row_name(row), subject.model.name, row["setting"],
             row.get("success_rate"), subject.task.score_name, row.get(subject.task.score_name), row["wall_s"])


def _subject(spec: ModelSpec, cfg: RunConfig, device: torch.device, autocast: torch.dtype | None,
             given: InMemory) -> Subject:
    if given.model is not None and spec is cfg.model:
        model = given.model.to(device)
    else:
        model = load_model(spec.name, spec.weights, mean=spec.mean, std=spec.std, input_size=spec.input_size,
                           num_classes=spec.num_classes, class_names_file=spec.class_names,
                           task=spec.task, dataset=spec.dataset,
                           threat=cfg.threat[0] if cfg.threat else None).to(device)
    model = model.to(memory_format=torch.channels_last)  # faster convolutions on GPUs and CPUs alike
    model.autocast_dtype = autocast
    task = get_task(model.task)
    if given.data is not None:
        data = images_in_memory(given.data, model, n=cfg.data.n)
    else:
        data = load_images(cfg.data.source, model, n=cfg.data.n)
    if data.class_names is not None:
        model.adopt_class_names(data.class_names)
    clean = task.predict(model, data.images, cfg.batch_size, device)
    held_out = None
    if cfg.data.eval_source:
        held = load_images(cfg.data.eval_source, model, n=cfg.data.eval_n)
        held_out = HeldOut(held, task.predict(model, held.images, cfg.batch_size, device))
    return Subject(model, task, data, clean, task.reference(data, clean), held_out,
                   prediction_count(model, data.images[:PROBE_IMAGES].to(device)))


def _resolved(cfg: RunConfig) -> RunConfig:
    """A copy for RUN_DIR/config.yaml: every attack and defense setting filled with its default, and
    every path (model and weights files, data, starting images, plugin files) absolute, so that
    `--resume` works from any working directory."""
    def settings(cls: type, params: dict[str, Any]) -> dict[str, Any]:
        return absolute_settings(cls, {**attack_defaults(cls), **params})

    specs = [AttackSpec(s.method, s.target_class, absolute(s.starting_image) if s.starting_image else None,
                        absolute(s.target_mask) if s.target_mask else None,
                        settings(get_attack(s.method).cls, s.params)) for s in cfg.attacks]
    defenses = [DefenseSpec(d.method, d.adaptive, settings(get_defense(d.method).cls, d.params))
                for d in cfg.defenses]
    data = dataclasses.replace(cfg.data, source=absolute_source(cfg.data.source),
                               eval_source=absolute_source(cfg.data.eval_source) if cfg.data.eval_source else None)
    return dataclasses.replace(cfg, attacks=specs, defenses=defenses, data=data, model=absolute_model(cfg.model),
                               models=[absolute_model(m) for m in cfg.models],
                               out=absolute(cfg.out) if cfg.out else None)


def log_to(path: Path) -> logging.Handler:
    """Send the advlab log to `path` as well (remove the handler when done)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


__all__ = ["InMemory", "build_attack", "log_to", "resume_experiment", "run_experiment"]
