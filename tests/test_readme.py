"""The README's and the manual's commands are real: every `advlab ...` line of their shell blocks parses with the
command line's own parser and, for the verbs that run an experiment, builds and validates its run configuration
(the path `advlab` takes up to loading the model). The offline ones also run end to end as golden cases (bench/golden.py) and the
README's Python blocks run in tests/test_api.py; `wc -l README.md` stays within 200 lines (the front door)."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from advlab.cli.args import apply_run_overrides, config_from_attack_args, config_from_defend_args
from advlab.cli.main import build_parser
from advlab.core.config_yaml import load_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands(pages: list[Path] = PAGES[:1]) -> list[list[str]]:
    commands = []
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():  # a command continued with a backslash is one
            for part in line.split("#", 1)[0].split(";"):
                words = shlex.split(part)
                if words and words[0] == "advlab":
                    commands.append(words[1:])
    return commands


def test_the_readme_is_a_front_door():
    assert len(README.splitlines()) <= 200
    assert len(readme_commands()) >= 8


@pytest.mark.parametrize("argv", readme_commands(PAGES), ids=lambda argv: " ".join(argv)[:60])
def test_every_documented_command_parses_and_builds_its_run(argv):
    if argv in (["--version"], ["--help"]):
        with pytest.raises(SystemExit) as stop:
            build_parser().parse_args(argv)
        assert stop.value.code == 0
        return
    args = build_parser().parse_args(argv)
    if args.verb in ("attack", "defend") and not getattr(args, "train", False):
        cfg = config_from_defend_args(args) if args.verb == "defend" else config_from_attack_args(args)
        apply_run_overrides(cfg, args)  # validates every setting, as the command does before loading anything
    elif args.verb == "run" and args.config:
        apply_run_overrides(load_config(ROOT / args.config), args)
