"""`advlab` command line: the parser and the dispatch of attack, defend, run, report, list (flags ->
configs in `args`, `list` in `listing`). Bad input -> one line, exit status 2."""
from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

from advlab.cli.args import apply_run_overrides, config_from_attack_args, config_from_defend_args, train_job_from_args
from advlab.core.config_yaml import load_config
from advlab.core.errors import AdvlabError, Interrupted, first_line


def number(text: str) -> float:
    """A float, also written as a fraction like 10/255."""
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (use e.g. 0.5 or 10/255)") from None


def floats(text: str) -> list[float]:
    return [number(v) for v in text.split(",")]


def number_or_sweep(text: str) -> float | list[float]:
    """A number, or comma-separated numbers: a sweep (one attack row per value, and a curve)."""
    values = floats(text)
    return values[0] if len(values) == 1 else values


class HelpFormatter(argparse.HelpFormatter):
    """Shows '(default: X)' where an option has a real default of its own (not None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (action.option_strings and default not in (None, False, "", [], argparse.SUPPRESS)
                and "default" not in text.lower()):
            text += f" (default: {default})"
        return text


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from advlab.core.version import __version__

    p = Parser(prog="advlab", description="Adversarial robustness lab: attacks, defenses, HTML reports.")
    p.add_argument("--version", action="version", version=f"advlab {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=Parser)

    run_common = argparse.ArgumentParser(add_help=False)  # unset options come from the config (or its defaults)
    g = run_common.add_argument_group("run")
    g.add_argument("-n", type=int, help="number of images (first n in the source's order)")
    g.add_argument("--eval-n", type=int, help="number of held-out images (universal perturbations)")
    g.add_argument("--seed", type=int, help="every random draw derives from it and each image's pixels (default 0)")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:K (default auto)")
    g.add_argument("--precision", choices=["fp32", "tf32", "bf16"], help="default fp32")
    g.add_argument("--batch-size", type=int, help="images per attack chunk; never changes a result (default 32)")
    g.add_argument("--out", help="run directory (default reports/NAME-YYYYmmdd-HHMMSS)")
    g.add_argument("--save-adversarials", action="store_const", const=True, default=None,
                   help="also save every adversarial image (8-bit) under arrays/; by default arrays/ keeps the "
                   "first 64 images of each row, what the report shows")
    g.add_argument("--name", help="run name")
    g.add_argument("--binarization-test", type=int, nargs="?", const=50, metavar="N",
                   help="also test every attack on N images' binarized models, each with an adversarial example "
                   "known to exist within eps (Zimmermann et al., NeurIPS 2022); passes at 95%% success (N "
                   "default 50)")
    g.add_argument("--threat", action="append", metavar="NORM:EPS", help="threat model of the robustness matrix, "
                   "e.g. linf:8/255 or l2:0.5 (repeat for one matrix each); an attack counts only where its "
                   "adversarial lies within eps (default: the norms and eps of the bounded attacks)")
    g.add_argument("--quiet", action="store_true", help="print only the report's path (not the robustness matrix)")
    g.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    model_data = argparse.ArgumentParser(add_help=False)
    m = model_data.add_argument_group("model (default: torchvision mobilenet_v2 IMAGENET1K_V1)")
    m.add_argument("--model", help="torchvision name, timm:NAME, hf-hub:ORG/NAME, robustbench:NAME, FILE.py:factory "
                                   "or package.module:factory (`advlab list` shows every model source)")
    m.add_argument("--weights", help="weights enum (IMAGENET1K_V2, DEFAULT, none), a state_dict FILE, or a "
                                     "robustbench model_dir")
    m.add_argument("--dataset", choices=("cifar10", "cifar100", "imagenet"),
                   help="a robustbench:NAME model's benchmark dataset (default: the one whose zoo has NAME)")
    m.add_argument("--mean", type=floats, help="one value or one per channel, comma-separated")
    m.add_argument("--std", type=floats, help="one value or one per channel, comma-separated")
    m.add_argument("--input-size", type=int, help="square input side, e.g. 28 or 224")
    m.add_argument("--num-classes", type=int)
    m.add_argument("--class-names", help="file with one class name per line")
    m.add_argument("--task", help="the model's task, one of `advlab list`'s (default: inferred from its outputs); "
                                  "segmentation or detection without --model runs the lab's fashion-scenes segmenter "
                                  "or detector")
    d = model_data.add_argument_group("data (default: imagenet-samples, the 20 ImageNet photos shipped in foolbox)")
    d.add_argument("--data", help="imagenet-samples | photos | fashion-mnist[:train|test] | fashion-scenes[:train|test] "
                   "| folder:PATH | tensors:FILE | pairs:DIR | voc:ROOT | coco:ROOT")
    d.add_argument("--year", help="voc: the VOC year (default 2012 for masks, 2007 for boxes)")
    d.add_argument("--split", help="voc: the image set (val, test, ...); coco: the split (default val2017)")
    d.add_argument("--eval-data", help="held-out images for universal perturbations (same forms as --data)")

    settings = argparse.ArgumentParser(add_help=False)
    b = settings.add_argument_group("attack settings (defaults: each attack's own, see `advlab list METHOD`; "
                                    "advlab defend: applied to every listed attack that has them)")
    b.add_argument("--steps", type=int)
    b.add_argument("--eps", type=number_or_sweep, help="perturbation budget, e.g. 10/255 (l_inf) or 2.0 (l2); "
                   "several, comma-separated, sweep it: 2/255,4/255,8/255")
    b.add_argument("--norm", choices=["linf", "l2"])
    b.add_argument("--solver", help="universal: deepfool | sgd | random")
    b.add_argument("--max-passes", type=int, help="universal: passes over the data (epochs for sgd)")
    b.add_argument("--delta", type=number, help="universal: stop at fooling ratio 1 - delta on the data")
    b.add_argument("--perturbation", help="universal: apply a saved perturbation FILE instead of computing one")
    b.add_argument("--max-queries", type=int, help="model evaluations per image")
    b.add_argument("--target-l2", type=number, help="stop an image once its L2 is at most this")
    b.add_argument("--candidates", type=int, help="proposals per image per step, one forward pass")
    b.add_argument("--prior", choices=["lowfreq", "normal", "perlin"],
                   help="boundary: where the random steps come from (default lowfreq)")
    b.add_argument("--surrogate", metavar="MODEL", help="boundary: tilt the random steps toward the gradient of this "
                   "local model (a torchvision name or FILE.py:factory); the attacked model still gives decisions only")
    b.add_argument("--surrogate-weights", metavar="WEIGHTS", help="the surrogate's weights (enum name or FILE)")
    b.add_argument("--target-class", type=int, help="targeted mode: the class every image should become")
    b.add_argument("--starting-image", help="targeted: an image file to start from; its class is the target")
    b.add_argument("--target-mask", help="segmentation: a shape (grayscale PNG, white = inside) painted with a class "
                   "absent from each image (or --target-class), every other pixel targeted to background")
    b.add_argument("--backend", choices=["ours", "foolbox"])
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other attack setting, e.g. --set adapt_window=8")

    a = sub.add_parser("attack", parents=[run_common, model_data, settings],
                       help="run one attack (defaults: the embedded quickstart)")
    a.add_argument("--method", required=True, help="attack name (see `advlab list`)")

    df = sub.add_parser("defend", parents=[run_common, model_data, settings],
                        help="train the HGD denoiser, or evaluate defenses against attacks (non-adaptive and adaptive)")
    g = df.add_argument_group("defenses")
    g.add_argument("--hgd", action="store_true", help="the HGD guided denoiser (Liao et al. 2018); needs "
                   "--checkpoint FILE, or --train")
    g.add_argument("--checkpoint", help="HGD checkpoint written by --train")
    g.add_argument("--defense", default="", metavar="NAME[:KEY=VALUE...],...",
                   help="baseline defenses, e.g. jpeg:quality=50,bit-depth:bits=4,blur,median (see `advlab list`)")
    g.add_argument("--attacks", default="fgsm,pgd", help="attacks to evaluate against, comma-separated "
                   "(default fgsm,pgd), e.g. fgsm,pgd,boundary,universal")
    g.add_argument("--no-adaptive", action="store_true", help="skip the adaptive setting (attacks on the "
                   "defended model end to end)")
    t = df.add_argument_group("HGD training (--hgd --train)")
    t.add_argument("--train", action="store_true", help="train an HGD on adversarial examples of --data")
    t.add_argument("--variant", default="lgd", help="guidance: pgd (pixel), fgd (feature), lgd (logits), "
                   "cgd (class label); default lgd")
    t.add_argument("--layer", help="fgd: the target model's layer (default: its top convolutional feature map)")
    t.add_argument("--width", type=number, default=1.0, help="DUNET channel multiplier (1 = the paper's 11M "
                   "parameters; 0.25 trains on a CPU)")
    t.add_argument("--epochs", type=int, default=10)
    t.add_argument("--lr", type=number, default=1e-3)
    t.add_argument("--val-n", type=int, help="training pairs kept for validation (default 10%%, at most 1000)")
    t.add_argument("--eps-max", type=number, default=16 / 255, help="largest l_inf eps of the training examples; "
                   "each image gets k/16 of it, k uniform in 1..16 (default 16/255, the paper's)")
    t.add_argument("--train-attacks", default="fgsm,pgd", help="attacks that make the training pairs")
    t.add_argument("--pgd-steps", type=int, default=10, help="steps of the training PGD")
    t.add_argument("--source-models", default="", metavar="NAME[@WEIGHTS],...",
                   help="more models to make training pairs on (transfer, the paper's ensemble)")

    r = sub.add_parser("run", parents=[run_common], help="run a YAML experiment")
    r.add_argument("config", nargs="?", help="YAML file (e.g. configs/quickstart.yaml)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a run that was stopped, keeping finished chunks")

    rep = sub.add_parser("report", help="re-render RUN_DIR/index.html from results.json")
    rep.add_argument("run_dir")
    rep.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    rs = sub.add_parser("runs", help="list finished runs with their headline numbers")
    rs.add_argument("dir", nargs="?", default="reports", help="folder holding run directories (default reports)")
    rs.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    ex = sub.add_parser("export", help="write a run's robustness matrix as csv, markdown or latex")
    ex.add_argument("run_dir")
    ex.add_argument("--format", default="markdown", choices=["csv", "markdown", "latex"])
    ex.add_argument("--out", help="file to write (default: print it); an existing file needs --force")
    ex.add_argument("--force", action="store_true", help="replace an existing --out file")
    ex.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    cmp = sub.add_parser("compare", help="one HTML page with several runs' matrices side by side, deltas highlighted")
    cmp.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    cmp.add_argument("--out", default="compare.html", help="HTML file to write (default compare.html); an existing "
                     "file needs --force")
    cmp.add_argument("--force", action="store_true", help="replace an existing --out file")
    cmp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    sch = sub.add_parser("schema", help="the JSON Schema of results.json, generated from advlab's typed results")
    sch.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")

    ls = sub.add_parser("list", help="registered attacks and defenses with their capabilities")
    ls.add_argument("method", nargs="?", help="an attack or defense: show its settings, types and defaults")
    ls.add_argument("--task", help="only the plugins that support this task (e.g. classification)")
    ls.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    console = _console_warnings()
    terminate = _terminate_as_interrupt()
    try:
        return _dispatch(args, argv)
    except AdvlabError as exc:
        if args.debug:
            raise
        print(f"advlab: error: {exc}", file=sys.stderr)
        return 2
    except Interrupted as stop:
        print(f"advlab: interrupted; finished work is kept. Continue with: {stop.resume}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("advlab: interrupted before anything was written", file=sys.stderr)
        return 130
    except OSError as exc:  # the machine, not advlab: a full disk, a folder without write permission
        if args.debug:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"advlab: error: {exc.strerror or exc}{where}; free space or choose another --out", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug: one line here, the traceback with --debug
        if args.debug:
            raise
        print(f"advlab: internal error: {type(exc).__name__}: {first_line(exc)}; this is a bug in advlab: rerun "
              "with --debug and report the traceback", file=sys.stderr)
        return 1
    finally:
        logging.getLogger("advlab").removeHandler(console)
        if terminate is not None:
            signal.signal(signal.SIGTERM, terminate)


def evaluate_command(job: Any, checkpoint: Path) -> str:
    """The command that evaluates a trained HGD checkpoint against FGSM and PGD, runnable as printed:
    the job's model and its data (the test split where it trained on a train split)."""
    model = job.model
    parts = ["advlab", "defend", "--hgd", "--checkpoint", str(checkpoint), "--model", model.name]
    if model.weights is not None:
        parts += ["--weights", str(model.weights)]
    for flag, value in (("--mean", model.mean), ("--std", model.std)):
        if value is not None:
            parts += [flag, ",".join(f"{v:g}" for v in value)]
    for flag, value in (("--input-size", model.input_size), ("--num-classes", model.num_classes),
                        ("--class-names", model.class_names), ("--dataset", model.dataset)):
        if value is not None:
            parts += [flag, str(value)]
    source = job.data.source
    data = source[: -len(":train")] + ":test" if source.endswith(":train") else source
    return shlex.join([*parts, "--data", data, "-n", "100", "--attacks", "fgsm,pgd"])


def _terminate_as_interrupt() -> Any:
    """SIGTERM (a scheduler's stop, `kill`) stops a job the way Ctrl-C does: the current chunk is
    dropped, finished ones are kept, and the resume command is printed. Returns the previous handler
    (None outside the main thread, where signals cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, signal.default_int_handler)


def _console_warnings() -> logging.Handler:
    """Warnings of the advlab logger (e.g. a model without weights) also go to stderr, one line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.addFilter(lambda record: record.levelno == logging.WARNING)  # errors: printed once, by main()
    handler.setFormatter(logging.Formatter("advlab: warning: %(message)s"))
    logger = logging.getLogger("advlab")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


def _runs_verbs(args: argparse.Namespace) -> int:
    """advlab runs / export / compare: read finished runs, write nothing into them."""
    from advlab.cli.runs import export, find_runs, format_runs
    from advlab.core import atomic

    if args.verb == "runs":
        print(format_runs(find_runs(Path(args.dir))))
    elif args.verb == "export":
        if args.out:
            _new_file(Path(args.out), args.force)
        text = export(Path(args.run_dir), args.format)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(Path(args.out), text)
            print(f"wrote {args.out}")
        else:
            print(text, end="")
    else:
        from advlab.report.compare import render_compare

        _new_file(Path(args.out), args.force)
        print(f"compare: {render_compare([Path(r) for r in args.run_dirs], Path(args.out))}")
    return 0


def _new_file(path: Path, force: bool) -> None:
    """A user's file is never overwritten without --force (issue: a 54 KB file became 58 bytes of CSV)."""
    if path.is_dir():
        raise AdvlabError(f"--out {path} is a directory; give a file name")
    if path.exists() and not force:
        raise AdvlabError(f"--out {path} already exists; choose another file, or add --force to replace it")


def _dispatch(args: argparse.Namespace, argv: list[str]) -> int:
    from advlab import api
    from advlab.cli.listing import describe_plugin, for_task, format_catalogs, format_plugins
    from advlab.core import registry  # heavy imports after argument parsing
    from advlab.core.device import manage_heap
    from advlab.report import render_report
    from advlab.report.terminal import text_summary

    warnings.filterwarnings("ignore", message=".*weights_only.*")
    if args.verb == "list":
        if args.method:
            print(describe_plugin(args.method))
        else:
            print(format_plugins(*(for_task(plugins, args.task) for plugins in (registry.attacks(),
                                                                                 registry.defenses()))))
            if args.task is None:
                print(format_catalogs())
        return 0
    if args.verb == "schema":
        import json

        from advlab.core.results import json_schema

        print(json.dumps(json_schema(), indent=1))
        return 0
    if args.verb == "report":
        print(render_report(Path(args.run_dir)))
        return 0
    if args.verb in ("runs", "export", "compare"):
        return _runs_verbs(args)
    if args.verb == "defend" and args.train:
        from advlab.defenses.hgd_job import train_hgd

        job = train_job_from_args(args, argv)
        checkpoint = train_hgd(job)
        print(f"checkpoint: {checkpoint}")
        print(f"evaluate it: {evaluate_command(job, checkpoint)}")
        return 0
    manage_heap()  # a run of the command line is the process: the allocator policy of long CPU runs
    cfg = None
    if not (args.verb == "run" and args.resume):
        if args.verb == "run":
            if not args.config:
                raise AdvlabError("advlab run needs a CONFIG.yaml (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
            cfg = load_config(args.config)
        elif args.verb == "defend":
            cfg = config_from_defend_args(args)
        else:
            cfg = config_from_attack_args(args)
        cfg = apply_run_overrides(cfg, args)
    evaluation = api.run_config(cfg, resume=args.resume) if cfg is None else api.run_config(cfg)
    from advlab.core import distributed

    if distributed.is_main():  # under torchrun, rank 0 wrote the report
        if not args.quiet:
            print(text_summary(evaluation.results, width=_width(), color=sys.stdout.isatty()), end="")
        print(f"report: {evaluation.report}")
    return 0


def _width() -> int:
    import shutil

    return max(80, shutil.get_terminal_size((120, 40)).columns)


if __name__ == "__main__":
    sys.exit(main())
