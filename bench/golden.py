"""Golden results: every config and README command that runs offline, at small -n, recorded so that
a refactor can prove it changed no number (issue 21: "before you move anything, record golden
results ... after the redesign every number in every results.json is identical, timings aside").

    python bench/golden.py record DIR            # run every case here, write DIR/<case>.json
    python bench/golden.py record DIR --ref REV  # the same on a clean worktree of REV (before a refactor)
    python bench/golden.py record DIR --case pgd # one case (repeat --case for several)
    python bench/golden.py compare OLD NEW       # every difference, key by key; exit 1 if any

A case's record is its results.json without what depends on the clock or the machine (timings,
throughputs, dates, versions, absolute paths), a SHA-256 of every tensor in its arrays/ files (the
adversarial images themselves), and the text of `export --format markdown`. Everything runs with
one intra-op thread, so a record is exact on one machine; compare records made on the same machine
(model files under reports/ are trained locally; their hashes are part of the record).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VOLATILE = ("wall_s", "created", "advlab_version", "torch", "python", "device")  # keys dropped everywhere
VOLATILE_SUFFIXES = ("_per_s", "_seconds", "_s_per_image")
FASHION = ("reports/models/fashion_cnn.pt",)

# (case, argv after `advlab`, files it needs beyond the repository: skipped with a note where missing)
CASES: list[tuple[str, list[str], tuple[str, ...]]] = [
    ("quickstart", ["run", "configs/quickstart.yaml", "-n", "1"], ()),
    ("dag-cross-task", ["run", "configs/dag-cross-task.yaml", "-n", "2"], ()),
    ("hgd-fashion", ["run", "configs/hgd-fashion.yaml", "-n", "20"],
     (*FASHION, "reports/models/hgd-fashion/hgd-lgd.pt")),
    ("uap-transfer-fashion", ["run", "configs/uap-transfer-fashion.yaml", "-n", "200", "--eval-n", "200"],
     (*FASHION, "reports/models/fashion_mlp.pt")),
    ("boundary", ["attack", "--method", "boundary", "-n", "1", "--max-queries", "300"], ()),
    ("boundary-targeted", ["attack", "--method", "boundary", "--target-class", "559", "-n", "2",
                           "--max-queries", "300"], ()),  # image 1 is a folding chair (559): image 0's start
    ("boundary-foolbox", ["attack", "--method", "boundary", "--backend", "foolbox", "--steps", "50", "-n", "1"], ()),
    ("boundary-threats", ["attack", "--method", "boundary", "--threat", "linf:8/255", "--threat", "l2:0.5",
                          "-n", "1", "--max-queries", "200"], ()),
    ("pgd", ["attack", "--method", "pgd", "--eps", "8/255", "--steps", "5", "-n", "4"], ()),
    ("pgd-sweep", ["attack", "--method", "pgd", "--eps", "2/255,8/255", "--steps", "3", "-n", "4"], ()),
    ("fgsm", ["attack", "--method", "fgsm", "--eps", "2/255", "-n", "4"], ()),
    ("standard", ["attack", "--method", "standard", "--eps", "8/255", "-n", "2"], ()),
    ("apgd-dlr-l2", ["attack", "--method", "apgd", "--set", "loss=dlr", "--norm", "l2", "--eps", "0.5", "-n", "2"], ()),
    ("universal", ["attack", "--method", "universal", "-n", "8", "--eval-n", "4", "--set", "max_passes=1"], ()),
    ("defend", ["defend", "--defense", "jpeg,bit-depth:bits=4", "--attacks", "pgd,boundary", "--eps", "8/255",
                "--steps", "3", "--max-queries", "200", "--threat", "linf:8/255", "-n", "2"], ()),
    ("dag-segmentation", ["attack", "--method", "dag", "--task", "segmentation", "-n", "2"], ()),
    ("dag-detection", ["attack", "--method", "dag", "--task", "detection", "-n", "2"], ()),
    ("dag-detection-vanish", ["attack", "--method", "dag", "--task", "detection", "--target-class", "0", "-n", "2"],
     ()),
    ("dag-mtcnn", ["attack", "--method", "dag", "--model", "mtcnn", "--data", "photos", "-n", "2",
                   "--input-size", "160"], ()),
]


# Runs advlab from a given checkout: its advlab/ first on the path, and its attacks/ and defenses/ as
# advlab.attacks and advlab.defenses (setup.cfg's package_dir), ahead of the installed editable copy.
LAUNCHER = """
import importlib.util, runpy, sys
root = sys.argv.pop(1)
class Plugins:
    @staticmethod
    def find_spec(name, path=None, target=None):
        for package in ("attacks", "defenses"):
            if name == "advlab." + package:
                return importlib.util.spec_from_file_location(
                    name, f"{root}/{package}/__init__.py", submodule_search_locations=[f"{root}/{package}"])
        return None
sys.meta_path.insert(0, Plugins)
sys.path.insert(0, root)
sys.argv[0] = "advlab"
runpy.run_module("advlab", run_name="__main__", alter_sys=True)
"""


def stable(value: Any) -> Any:
    """results.json without what depends on the clock or the machine; absolute paths cut to names."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items()
                if k not in VOLATILE and not k.endswith(VOLATILE_SUFFIXES)}
    if isinstance(value, list):
        return [stable(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        return Path(value).name
    return value


def tensor_digests(run: Path) -> dict[str, str]:
    """SHA-256 of every tensor in the run's arrays/*.pt files, keyed file:name."""
    import torch

    out = {}
    for path in sorted((run / "arrays").glob("*.pt")):
        saved = torch.load(path, map_location="cpu", weights_only=True)
        items = saved.items() if isinstance(saved, dict) else [("", saved)]
        for name, value in items:
            if isinstance(value, torch.Tensor):
                out[f"{path.name}:{name}"] = hashlib.sha256(value.contiguous().numpy().tobytes()).hexdigest()
    return out


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record(out: Path, root: Path, python: str, only: list[str] | None = None) -> int:
    """Run every case (or those named in `only`) in `root` (a checkout), write out/<case>.json; 0 if every
    available case ran."""
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    advlab = [python, "-c", LAUNCHER, str(root)]
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        for case, argv, needs in CASES:
            if only and case not in only:
                continue
            missing = [n for n in needs if not (root / n).exists()]
            if missing:
                print(f"{case:24s} skipped: {', '.join(missing)} missing (make hgd-fashion / uap-fashion build them)")
                continue
            run = Path(tmp) / case
            t0 = time.perf_counter()
            done = subprocess.run([*advlab, *argv, "--out", str(run)], cwd=root, env=env,
                                  capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{case:24s} FAILED (exit {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
                failed += 1
                continue
            export = subprocess.run([*advlab, "export", str(run), "--format", "markdown"], cwd=root,
                                    env=env, capture_output=True, text=True)
            results = json.loads((run / "results.json").read_text())
            entry = {"argv": argv, "results": stable(results), "tensors": tensor_digests(run),
                     "export_markdown": export.stdout if export.returncode == 0 else f"exit {export.returncode}",
                     "inputs": {n: file_digest(root / n) for n in needs}}
            (out / f"{case}.json").write_text(json.dumps(entry, indent=1, sort_keys=True) + "\n")
            print(f"{case:24s} {time.perf_counter() - t0:6.1f} s")
    return 1 if failed else 0


def record_at(ref: str, out: Path, only: list[str] | None = None) -> int:
    """Record on a clean worktree of `ref`, with this checkout's environment (and its reports/models)."""
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            models = ROOT / "reports" / "models"
            if models.is_dir():
                shutil.copytree(models, tree / "reports" / "models")
            return record(out, tree, sys.executable, only)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)


def differences(old: Any, new: Any, where: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = [f"{where}.{k}: only in the old record" for k in old.keys() - new.keys()]
        found += [f"{where}.{k}: only in the new record" for k in new.keys() - old.keys()]
        for k in sorted(old.keys() & new.keys()):
            found += differences(old[k], new[k], f"{where}.{k}")
        return found
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in differences(a, b, f"{where}[{i}]")]
    return [] if old == new else [f"{where}: {json.dumps(old)[:80]} -> {json.dumps(new)[:80]}"]


def compare(old_dir: Path, new_dir: Path) -> int:
    found = 0
    for old in sorted(old_dir.glob("*.json")):
        new = new_dir / old.name
        if not new.exists():
            print(f"{old.stem}: missing from {new_dir}")
            found += 1
            continue
        diffs = differences(json.loads(old.read_text()), json.loads(new.read_text()))
        print(f"{old.stem}: {'identical' if not diffs else f'{len(diffs)} differences'}")
        for d in diffs[:40]:
            print("   ", d)
        found += bool(diffs)
    return 1 if found else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="verb", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("out", type=Path)
    rec.add_argument("--ref", help="record on a clean worktree of this git revision instead of this checkout")
    rec.add_argument("--case", action="append", help="record only this case (repeat for several)")
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("old", type=Path)
    cmp_.add_argument("new", type=Path)
    args = p.parse_args()
    if args.verb == "compare":
        return compare(args.old, args.new)
    if args.ref:
        return record_at(args.ref, args.out.resolve(), args.case)
    return record(args.out.resolve(), ROOT, sys.executable, args.case)


if __name__ == "__main__":
    sys.exit(main())
