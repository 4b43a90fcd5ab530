"""The library's entry points: `evaluate` (models x attacks x defenses on a data set -> `Evaluation`),
`attack` (one attack on one batch -> `AttackResult`) and `run` (a `RunConfig`, the path the command line
and YAML configs take; `evaluate` builds one and takes it too)."""
from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.api.evaluation import Evaluation
from advlab.api.inputs import (
    AttackLike,
    DefenseLike,
    attack_specs,
    borrowed,
    defense_specs,
    image_size,
    model_input,
    threat_models,
)
from advlab.core import distributed
from advlab.core.attack import AttackResult
from advlab.core.config import AttackSpec, DataSpec, RunConfig, validate
from advlab.core.device import manage_heap as opt_in_heap
from advlab.core.device import resolve_device
from advlab.core.errors import AdvlabError
from advlab.core.registry import default_attack_of, get_attack
from advlab.core.settings import instantiate
from advlab.core.threat import ThreatModel
from advlab.data.memory import images_in_memory
from advlab.data.sources import MEMORY
from advlab.run.runner import InMemory, resume_experiment, run_experiment
from advlab.tasks import Subject, get_task
from advlab.zoo.models import load_model

log = logging.getLogger("advlab")


def run_config(cfg: RunConfig | None, *, resume: str | Path | None = None, given: InMemory = InMemory(),
        quiet: bool = True) -> Evaluation:
    """Run the experiment `cfg` describes (the path of the command line and YAML configs), or continue the
    stopped run in `resume` (its own config.yaml; `cfg` is then None); `given` objects stand for the model
    and data the config names. Without `cfg.out` the run goes to reports/NAME-YYYYmmdd-HHMMSS."""
    with _progress(quiet):
        if resume is not None:
            run_dir = resume_experiment(Path(resume), given)
        elif cfg is None:
            raise AdvlabError("run needs a RunConfig, or resume=RUN_DIR")
        else:
            run_dir = run_experiment(cfg, given=given)
    distributed.barrier()  # under torchrun: rank 0 has written results.json before any rank reads it
    return Evaluation(run_dir)


def evaluate(model: nn.Module | str, data: Any, *,
             attacks: AttackLike | Sequence[AttackLike] | None = None,
             threat: str | ThreatModel | Sequence[str | ThreatModel] | None = None,
             defenses: DefenseLike | Sequence[DefenseLike] = (), adaptive: bool = True, seed: int = 0,
             device: str = "auto", precision: str = "fp32", batch_size: int = 32, n: int | None = None,
             out: str | Path | None = None, name: str = "evaluate", mean: Sequence[float] | None = None,
             std: Sequence[float] | None = None, input_size: int | None = None,
             class_names: Sequence[str] | None = None, task: str | None = None, weights: str | None = None,
             dataset: str | None = None, save_adversarials: bool = False, binarization_test: int = 0,
             quiet: bool = False, manage_heap: bool = False, **settings: Any) -> Evaluation:
    """Evaluate `model` on `data` against `attacks` (and behind `defenses`), as `advlab run` does.

    model: an `nn.Module` taking normalised images (`mean`/`std` default to the images as they are,
        `input_size` resizes; the task is read from its output), or any name the command line takes
        ('robustbench:Carmon2019Unlabeled' with `dataset='cifar10'`, 'timm:resnet18.a1_in1k', ...).
    data: `(x, y)` tensors (x: N images in [0, 1], NCHW or NHWC, float or uint8; y: labels, or masks for a
        segmenter), a map-style Dataset or a DataLoader over one, or a source name ('tensors:FILE', ...).
    attacks: a name ('standard', 'pgd', 'boundary', ...), an attack object, or a list of them; `settings`
        (e.g. steps=20) go to every named attack that has them. Default: AutoAttack's standard sequence (the
        attack that declares itself the default of advlab.evaluate).
    threat: 'linf:8/255' or several: the threat models of the robustness matrices, and the norm and eps of
        every named attack with an eps that has none in `settings` (one attack per threat model). Default: the
        threat model the model was made for (a RobustBench entry's), else the bounded attacks' own.
    defenses: 'jpeg', 'jpeg:quality=50', 'hgd:checkpoint=FILE', defense objects; each evaluated without,
        non-adaptive and (`adaptive`) adaptive.
    binarization_test: test every attack on this many images' binarized models (Zimmermann et al., NeurIPS
        2022), each with an adversarial example known to exist within the threat model; results in
        `Evaluation.binarization_tests`, a warning where an attack fails (0: off).
    out: a new or empty directory to write the run to, as the command line does (resumable: call again with
        the same objects and `out` to continue a stopped run); default a temporary one (`Evaluation.save`).
    quiet: no progress lines and no progress bars.
    manage_heap: opt this process in to the allocator policy of long CPU runs (`advlab.core.device.manage_heap`);
        off by default, as a library call should change nothing process-wide.
    """
    threats = threat_models(threat)
    with borrowed(model):
        spec, wrapped = model_input(model, mean=mean, std=std, input_size=input_size, class_names=class_names,
                                    task=task, weights=weights, dataset=dataset, probe_size=image_size(data))
        in_memory = not isinstance(data, str)
        named = attacks if attacks is not None else default_attack_of("advlab.evaluate")
        cfg = RunConfig(name=name, seed=seed, device=device, precision=precision, batch_size=batch_size,
                        out=str(out) if out is not None else None, save_adversarials=save_adversarials,
                        binarization_test=binarization_test, model=spec,
                        data=DataSpec(f"{MEMORY}:{_kind(data)}" if in_memory else data, n=n),
                        attacks=attack_specs(named, threats, settings, quiet=quiet),
                        defenses=defense_specs(defenses, adaptive), threat=threats)
        validate(cfg)
        if manage_heap:
            opt_in_heap()
        resume = _unfinished(out)
        temporary = None
        if out is None:  # the run's files (arrays, report) live as long as the Evaluation, or until save()
            temporary = tempfile.TemporaryDirectory(prefix=f"advlab-{name}-")
            cfg.out = temporary.name
        evaluation = run_config(None if resume else cfg, resume=resume,
                         given=InMemory(wrapped, data if in_memory else None), quiet=quiet)
    evaluation.keep_alive(temporary)
    return evaluation


def attack(model: nn.Module | str, x: torch.Tensor, y: torch.Tensor | None = None, *, method: str | None = None,
           seed: int = 0, device: str | None = None, mean: Sequence[float] | None = None,
           std: Sequence[float] | None = None, input_size: int | None = None, task: str | None = None,
           **settings: Any) -> AttackResult:
    """One attack on one batch: images `x` (N, C, H, W) in [0, 1] with labels `y` (the model's own prediction
    where None), planned as a run plans it (the task's criterion: untargeted unless `target_class` is given).
    `method` defaults to PGD (the attack that declares itself the default of advlab.attack). Returns the
    attack's result: `x_adv`, `success`, `queries`, `distance` (in the attack's norm)."""
    method = method if method is not None else default_attack_of("advlab.attack")
    target = settings.pop("target_class", None)
    built = instantiate("attack", method, get_attack(method).cls, settings)
    where = resolve_device(device or ("cuda" if x.is_cuda else "cpu"))
    with borrowed(model):
        spec, wrapped = model_input(model, mean=mean, std=std, input_size=input_size, task=task,
                                    probe_size=image_size((x,)))
        net = wrapped if wrapped is not None else load_model(spec.name, spec.weights, mean=spec.mean, std=spec.std,
                                                             input_size=spec.input_size, task=spec.task)
        net = net.to(where).eval()
        task_ = get_task(net.task)
        data = images_in_memory((x.detach().cpu(), y.detach().cpu() if y is not None else None), net)
        clean = task_.predict(net, data.images, len(x), where)
        subject = Subject(net, task_, data, clean, task_.reference(data, clean), None)
        built.prepare(net, tuple(x.shape[1:]), where)
        plan = task_.plan(AttackSpec(method, target_class=target), built, subject, where, seed=seed)
        starting = plan.starting_points
        if starting is not None and not isinstance(starting, torch.Tensor):
            starting = starting.tensor()
        return built(net, x.detach().to(where), plan.criterion.to(where), seed=seed,
                     starting_points=None if starting is None else starting.to(where))


def _kind(data: Any) -> str:
    return "tensors" if isinstance(data, tuple | list | torch.Tensor) else type(data).__name__


def _unfinished(out: str | Path | None) -> Path | None:
    """`out` where it holds a run advlab started and did not finish (config.yaml, no results.json)."""
    if out is None:
        return None
    path = Path(out).expanduser()
    if (path / "config.yaml").is_file() and not (path / "results.json").is_file():
        return path
    if (path / "results.json").is_file():
        raise AdvlabError(f"out={path} already holds a finished run; read it with advlab.load({str(path)!r}) or "
                          "pick another out")
    return None


@contextlib.contextmanager
def _progress(quiet: bool) -> Iterator[None]:
    """The run's progress lines (one per attack row) on stderr, where no handler of the caller's shows them."""
    if quiet or log.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("advlab: %(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


__all__ = ["attack", "evaluate", "run_config"]
