"""Parsed command lines -> run configurations: `advlab attack` and `advlab defend` build a RunConfig
(the same one a YAML file gives), `advlab defend --hgd --train` a training job, and the common flags
override a config. Every setting flag becomes the attack's own setting, checked by the attack."""
from __future__ import annotations

import argparse
import logging
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from advlab.core.config import AttackSpec, DefenseSpec, ModelSpec, RunConfig, default_weights, validate
from advlab.core.config_yaml import expand_sweeps
from advlab.core.errors import AdvlabError
from advlab.core.settings import key_value, parse_defenses
from advlab.core.threat import parse_threat, unique

log = logging.getLogger("advlab")

# CLI flags that become attack settings when given (dest -> setting name).
ATTACK_FLAGS = {"steps": "steps", "max_queries": "max_queries", "target_l2": "target_l2",
                "candidates": "candidates", "backend": "backend", "eps": "eps", "norm": "norm", "solver": "solver",
                "max_passes": "max_passes", "delta": "delta", "perturbation": "perturbation", "prior": "prior",
                "surrogate": "surrogate"}


def config_from_attack_args(args: argparse.Namespace) -> RunConfig:
    from advlab.core.registry import get_attack

    info = get_attack(args.method)  # an unknown method is named before anything else
    cfg = RunConfig(name=args.method)
    _model_and_data(cfg, args, info.tasks)
    cfg.attacks = [AttackSpec(method=args.method, target_class=args.target_class, starting_image=args.starting_image,
                              target_mask=args.target_mask,
                              params=_attack_params(args))]
    return cfg


def config_from_defend_args(args: argparse.Namespace) -> RunConfig:
    """`advlab defend` (evaluation): the attacks of --attacks, each with the flags it accepts, and the
    defenses of --hgd/--checkpoint and --defense."""
    from advlab.core.registry import get_attack
    from advlab.core.settings import attack_defaults

    cfg = RunConfig(name="defend")
    _model_and_data(cfg, args)
    methods = [m.strip() for m in args.attacks.split(",") if m.strip()]
    if not methods:
        raise AdvlabError("--attacks is empty; name at least one attack, e.g. --attacks fgsm,pgd")
    params = _attack_params(args)
    accepted = {m: set(attack_defaults(get_attack(m).cls)) for m in methods}
    unused = sorted(k for k in params if not any(k in names for names in accepted.values()))
    if unused:
        raise AdvlabError(f"no attack in --attacks {args.attacks} has the setting {unused[0]!r}")
    cfg.attacks = [AttackSpec(method=m, target_class=args.target_class, starting_image=args.starting_image,
                              target_mask=args.target_mask,
                              params={k: v for k, v in params.items() if k in accepted[m]}) for m in methods]
    adaptive = not args.no_adaptive
    if args.hgd:
        if not args.checkpoint:
            raise AdvlabError("--hgd needs --checkpoint FILE (an HGD trained with `advlab defend --hgd --train`), "
                              "or --train to train one")
        from advlab.defenses.hgd import HGD  # --hgd: the CLI's shortcut for the HGD plugin (its documented command)

        cfg.defenses.append(DefenseSpec(HGD.name, adaptive, {"checkpoint": args.checkpoint}))
    elif args.checkpoint:
        raise AdvlabError("--checkpoint is for the HGD defense; add --hgd")
    cfg.defenses += [DefenseSpec(name, adaptive, settings) for name, settings in parse_defenses(args.defense)]
    if not cfg.defenses:
        raise AdvlabError("no defense given; use --hgd --checkpoint FILE and/or --defense jpeg,bit-depth,blur,median")
    return cfg


def train_job_from_args(args: argparse.Namespace, argv: Sequence[str] = ()) -> Any:
    """`advlab defend --hgd --train`: the training job (`argv` gives the command that continues it)."""
    from datetime import datetime

    from advlab.core.config import DataSpec
    from advlab.defenses.hgd_job import TrainJob
    from advlab.defenses.hgd_train import TrainSettings

    if not args.hgd:
        raise AdvlabError("--train trains the HGD denoiser; add --hgd")
    cfg = RunConfig()
    _model_and_data(cfg, args)
    sources = []
    for item in (i.strip() for i in args.source_models.split(",") if i.strip()):
        name, _, weights = item.partition("@")
        sources.append(ModelSpec(name=name, weights=weights or default_weights(name)))
    try:
        settings = TrainSettings(variant=args.variant, layer=args.layer, width=args.width, epochs=args.epochs,
                                 batch_size=args.batch_size or 32, lr=args.lr, eps_max=args.eps_max,
                                 attacks=tuple(a.strip() for a in args.train_attacks.split(",") if a.strip()),
                                 pgd_steps=args.pgd_steps, seed=args.seed or 0)
    except ValueError as exc:
        raise AdvlabError(f"HGD training: {exc}") from None
    out = Path(args.out) if args.out else Path("reports") / f"hgd-{settings.variant}-{datetime.now():%Y%m%d-%H%M%S}"
    if args.n is not None and args.n < 2:
        raise AdvlabError(f"-n must be at least 2 (training and validation pairs), got {args.n}")
    return TrainJob(out=out, model=cfg.model, sources=sources, data=DataSpec(source=cfg.data.source, n=args.n),
                    val_n=args.val_n, settings=settings, device=args.device or "auto",
                    precision=args.precision or "fp32", resume_command=same_command_into(argv, out))


def same_command_into(argv: Sequence[str], out: Path) -> str:
    """The command line `argv` again, writing into `out` (absolute): what continues a training job."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            kept.append(arg)
    return shlex.join(["advlab", *kept, "--out", str(out.expanduser().resolve())])


def _model_and_data(cfg: RunConfig, args: argparse.Namespace, tasks: frozenset[str] = frozenset()) -> None:
    """Model and data from the flags. Without --model, a run of a task with a default run of its own
    (--task, or an attack that does not support the first task of the catalog: the first task it
    supports) gets that task's model and data (`Task.default_run`)."""
    from advlab.core.registry import ANY_TASK
    from advlab.tasks import TASKS, get_task

    if args.task is not None:
        get_task(args.task)  # an unknown task is one line naming the known ones
    order = [e.name for e in TASKS.in_order()]
    runs = [t for t in order if t in tasks or ANY_TASK in tasks] if tasks else order  # what the attack runs on
    task = args.task or (runs[0] if runs and runs[0] != order[0] else None)
    default = get_task(task).default_run if task is not None else None
    if not args.model and default is not None:
        cfg.model = ModelSpec(name=default.model, weights=default.weights, task=task)
        cfg.data.source, cfg.data.n = default.data, default.n
        if not args.task:  # the default model swapped without being asked: say so, once, and record it
            others = [t for t in runs if t != task]
            note = (f"--method {args.method} does not attack {order[0]} models, so the model is the lab's {task} "
                    f"model {cfg.model.name}{'' if args.data else ' on ' + default.data}; "
                    + "".join(f"add --task {t} for the lab's {t} model, " for t in others)
                    + "or --model and --data for your own")
            cfg.notes.append(note)
            log.warning(note)
    if args.model:
        from advlab.zoo.lab_nets import LAB_NETS  # heavy (torchvision's detection models): after parsing

        cfg.model.name = args.model
        cfg.model.weights = default_weights(args.model)
        if args.model in LAB_NETS and not args.data:  # a lab net's own held-out data
            cfg.data.source = LAB_NETS[args.model].data
    if args.task:
        cfg.model.task = args.task
    for key in ("weights", "mean", "std", "input_size", "num_classes", "class_names", "dataset"):
        if getattr(args, key) is not None:
            setattr(cfg.model, key, getattr(args, key))
    if args.data:
        cfg.data.source = args.data
    if args.year or args.split:
        cfg.data.source = _with_split(cfg.data.source, args.year, args.split)
    cfg.data.eval_source = args.eval_data


def _with_split(source: str, year: str | None, split: str | None) -> str:
    """voc:ROOT + --year/--split -> voc:ROOT:YEAR:SPLIT; coco:ROOT + --split -> coco:ROOT:SPLIT."""
    scheme, _, arg = source.partition(":")
    root = arg.split(":")[0]
    if scheme == "coco" and year is None:
        return f"coco:{root}:{split}"
    if scheme == "voc":
        parts = [*arg.split(":"), "", ""][1:3]
        return f"voc:{root}:{year or parts[0]}:{split or parts[1]}".rstrip(":")
    raise AdvlabError(f"--year and --split are for voc:ROOT (year and image set) and coco:ROOT (--split only), not "
                      f"{source!r}")


def _attack_params(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = {ATTACK_FLAGS[k]: getattr(args, k) for k in ATTACK_FLAGS if getattr(args, k) is not None}
    if args.surrogate_weights is not None:
        if args.surrogate is None:
            raise AdvlabError("--surrogate-weights needs --surrogate MODEL (the model those weights belong to)")
        params["surrogate"] = {"name": args.surrogate, "weights": args.surrogate_weights}
    params.update(key_value(item, f"--set {item!r}", "--set adapt_window=8") for item in args.set)
    return params


def apply_run_overrides(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    for flag, key in (("seed", "seed"), ("device", "device"), ("precision", "precision"),
                      ("batch_size", "batch_size"), ("out", "out"), ("name", "name"),
                      ("save_adversarials", "save_adversarials"), ("binarization_test", "binarization_test")):
        if getattr(args, flag) is not None:
            setattr(cfg, key, getattr(args, flag))
    if args.n is not None:
        cfg.data.n = args.n
    if args.eval_n is not None:
        cfg.data.eval_n = args.eval_n
    if args.threat:
        cfg.threat = unique(parse_threat(text) for text in args.threat)
    cfg.attacks = expand_sweeps(cfg.attacks, "command line")
    validate(cfg)
    return cfg
