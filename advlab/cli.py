"""`advlab` command line: attack, run, report, list. Bad input -> one line, exit status 2."""
from __future__ import annotations

import argparse
import sys
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import yaml

from advlab.config import AttackSpec, RunConfig, default_weights, load_config, validate
from advlab.errors import AdvlabError

# CLI flags that become attack settings when given (dest -> setting name).
ATTACK_FLAGS = {"steps": "steps", "max_queries": "max_queries", "target_l2": "target_l2",
                "candidates": "candidates", "backend": "backend", "eps": "eps", "norm": "norm", "solver": "solver",
                "max_passes": "max_passes", "delta": "delta", "perturbation": "perturbation"}


def number(text: str) -> float:
    """A float, also written as a fraction like 10/255."""
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (use e.g. 0.5 or 10/255)") from None


def floats(text: str) -> list[float]:
    return [number(v) for v in text.split(",")]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own errors: one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="advlab", description="Adversarial robustness lab: attacks, defenses, HTML reports.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="verb", required=True, parser_class=Parser)

    run_common = argparse.ArgumentParser(add_help=False)
    g = run_common.add_argument_group("run")
    g.add_argument("-n", type=int, help="number of images (first n in the source's order)")
    g.add_argument("--eval-n", type=int, help="number of held-out images (universal perturbations)")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="auto | cpu | cuda | cuda:K (default auto)")
    g.add_argument("--precision", choices=["fp32", "tf32", "bf16"])
    g.add_argument("--batch-size", type=int, help="images per attack chunk")
    g.add_argument("--out", help="run directory (default reports/NAME-YYYYmmdd-HHMMSS)")
    g.add_argument("--name", help="run name")
    g.add_argument("--debug", action="store_true", help="show tracebacks")

    a = sub.add_parser("attack", parents=[run_common], help="run one attack (defaults: the embedded quickstart)")
    a.add_argument("--method", required=True, help="attack name (see `advlab list`)")
    m = a.add_argument_group("model (default: torchvision mobilenet_v2 IMAGENET1K_V1)")
    m.add_argument("--model", help="torchvision name, FILE.py:factory or package.module:factory")
    m.add_argument("--weights", help="weights enum (IMAGENET1K_V2, DEFAULT, none) or a state_dict FILE")
    m.add_argument("--mean", type=floats, help="one value or one per channel, comma-separated")
    m.add_argument("--std", type=floats, help="one value or one per channel, comma-separated")
    m.add_argument("--input-size", type=int, help="square input side, e.g. 28 or 224")
    m.add_argument("--num-classes", type=int)
    m.add_argument("--class-names", help="file with one class name per line")
    d = a.add_argument_group("data (default: imagenet-samples, the 20 ImageNet photos shipped in foolbox)")
    d.add_argument("--data", help="imagenet-samples | photos | fashion-mnist[:train|test] | folder:PATH | tensors:FILE")
    d.add_argument("--eval-data", help="held-out images for universal perturbations (same forms as --data)")
    b = a.add_argument_group("attack settings")
    b.add_argument("--steps", type=int)
    b.add_argument("--eps", type=number, help="perturbation budget, e.g. 10/255 (l_inf) or 2.0 (l2)")
    b.add_argument("--norm", choices=["linf", "l2"])
    b.add_argument("--solver", help="universal: deepfool | sgd | random")
    b.add_argument("--max-passes", type=int, help="universal: passes over the data (epochs for sgd)")
    b.add_argument("--delta", type=number, help="universal: stop at fooling ratio 1 - delta on the data")
    b.add_argument("--perturbation", help="universal: apply a saved perturbation FILE instead of computing one")
    b.add_argument("--max-queries", type=int, help="model evaluations per image")
    b.add_argument("--target-l2", type=number, help="stop an image once its L2 is at most this")
    b.add_argument("--candidates", type=int, help="proposals per image per step, one forward pass")
    b.add_argument("--target-class", type=int, help="targeted mode: the class every image should become")
    b.add_argument("--starting-image", help="targeted: an image file to start from; its class is the target")
    b.add_argument("--backend", choices=["ours", "foolbox"])
    b.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other attack setting, e.g. --set spherical_every=2")

    r = sub.add_parser("run", parents=[run_common], help="run a YAML experiment")
    r.add_argument("config", nargs="?", help="YAML file (e.g. configs/quickstart.yaml)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a run that was stopped, keeping finished chunks")

    rep = sub.add_parser("report", help="re-render RUN_DIR/index.html from results.json")
    rep.add_argument("run_dir")
    rep.add_argument("--debug", action="store_true", help="show tracebacks")

    ls = sub.add_parser("list", help="registered attacks and defenses with their capabilities")
    ls.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def config_from_attack_args(args: argparse.Namespace) -> RunConfig:
    cfg = RunConfig(name=args.method)
    if args.model:
        cfg.model.name = args.model
        cfg.model.weights = default_weights(args.model)
    for key in ("weights", "mean", "std", "input_size", "num_classes", "class_names"):
        if getattr(args, key) is not None:
            setattr(cfg.model, key, getattr(args, key))
    if args.data:
        cfg.data.source = args.data
    cfg.data.eval_source = args.eval_data
    params: dict[str, Any] = {ATTACK_FLAGS[k]: getattr(args, k) for k in ATTACK_FLAGS if getattr(args, k) is not None}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AdvlabError(f"--set {item!r}: use KEY=VALUE, e.g. --set spherical_every=2")
        params[key.strip().replace("-", "_")] = yaml.safe_load(value)
    cfg.attacks = [AttackSpec(method=args.method, target_class=args.target_class, starting_image=args.starting_image,
                              params=params)]
    return cfg


def apply_run_overrides(cfg: RunConfig, args: argparse.Namespace) -> RunConfig:
    for flag, key in (("seed", "seed"), ("device", "device"), ("precision", "precision"),
                      ("batch_size", "batch_size"), ("out", "out"), ("name", "name")):
        if getattr(args, flag) is not None:
            setattr(cfg, key, getattr(args, flag))
    if args.n is not None:
        cfg.data.n = args.n
    if args.eval_n is not None:
        cfg.data.eval_n = args.eval_n
    validate(cfg)
    return cfg


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _dispatch(args)
    except AdvlabError as exc:
        if args.debug:
            raise
        print(f"advlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("advlab: interrupted; finished chunks are kept (advlab run --resume RUN_DIR)", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    from advlab import registry  # heavy imports after argument parsing
    from advlab.report import render_report
    from advlab.runner import resume_experiment, run_experiment

    warnings.filterwarnings("ignore", message=".*weights_only.*")
    if args.verb == "list":
        print(_format_plugins(registry.attacks(), registry.defenses()))
        return 0
    if args.verb == "report":
        print(render_report(Path(args.run_dir)))
        return 0
    if args.verb == "run" and args.resume:
        run_dir = resume_experiment(Path(args.resume))
    else:
        if args.verb == "run":
            if not args.config:
                raise AdvlabError("advlab run needs a CONFIG.yaml (e.g. configs/quickstart.yaml) or --resume RUN_DIR")
            cfg = load_config(args.config)
        else:
            cfg = config_from_attack_args(args)
        run_dir = run_experiment(apply_run_overrides(cfg, args))
    print(f"report: {run_dir / 'index.html'}")
    return 0


def _format_plugins(attacks: dict, defenses: dict) -> str:
    lines = ["attacks:"]
    for info in attacks.values():
        lines.append(f"  {info.name:12s} threat={info.threat:9s} tasks={','.join(sorted(info.tasks)):16s} {info.summary}")
    lines.append("defenses:")
    lines += [f"  {i.name:12s} tasks={','.join(sorted(i.tasks)):16s} {i.summary}" for i in defenses.values()]
    if not defenses:
        lines.append("  (none registered)")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
