"""Benchmark: does the report stay small and fast at any N? FGSM on the lab's Fashion-MNIST CNN over
N real images (fashion-mnist:train, 28 px), then the sizes of results.json, the samples sidecar and
index.html, the time to render and to parse the report, and the time headless Chromium takes to load
it (its load event, images and plots decoded), for a small and a large N.

    python bench/report_scale.py                  # N = 1,000 and 50,000 (trains the CNN first if needed)

The scaling issue's goal: the report of a 50,000-image run loads in under 2 seconds. Prints a table
and a JSON line.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

from advlab.report import render_report

MODEL = Path("reports/models/fashion_cnn.pt")  # `make fashion-models` writes it
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# The report in a frame of a page that notes, at the frame's load event, the time since its own start.
TIMER = ('<!doctype html><title>-</title><iframe style="width:1400px;height:900px" src="{src}" '
         'onload="document.title = \'loaded \' + performance.now().toFixed(0)"></iframe>')


def browser_load_ms(page: Path) -> float | None:
    """Milliseconds from navigation start to the report's load event in headless Chromium (median of
    3), or None without Chromium."""
    if CHROMIUM is None:
        return None
    timer = page.with_name("timer.html")
    timer.write_text(TIMER.format(src=page.name), encoding="utf-8")
    times = []
    for _ in range(3):
        out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                              "--dump-dom", timer.resolve().as_uri()], capture_output=True, text=True, timeout=120,
                             check=False)
        found = re.search(r"<title>loaded (\d+)</title>", out.stdout)
        if found is None:
            raise SystemExit(f"chromium did not load {page}: {out.stderr[-1000:]}")
        times.append(float(found.group(1)))
    return sorted(times)[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,50000")
    args = p.parse_args()
    if not MODEL.is_file():
        subprocess.run(["make", "fashion-models"], check=True)
    rows = []
    print(f"{'images':>7s} {'results.json KiB':>17s} {'sidecar KiB':>12s} {'index.html KiB':>15s} "
          f"{'render s':>9s} {'parse s':>8s} {'browser load s':>15s}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(v) for v in args.sizes.split(",")):
            run = Path(tmp) / f"run-{n}"
            subprocess.run([sys.executable, "-m", "advlab", "attack", "--method", "fgsm", "--model",
                            "advlab.zoo.smallnets:fashion_cnn", "--weights", str(MODEL), "--mean", "0.5", "--std", "0.5",
                            "--input-size", "28", "--data", "fashion-mnist:train", "-n", str(n), "--batch-size", "1000",
                            "--out", str(run)], check=True, capture_output=True)
            t0 = time.perf_counter()
            html = render_report(run).read_text(encoding="utf-8")
            render = time.perf_counter() - t0
            t0 = time.perf_counter()
            HTMLParser().feed(html)  # what a browser must at least read
            parse = time.perf_counter() - t0
            load_ms = browser_load_ms(run / "index.html")
            sidecar = sum(f.stat().st_size for f in (run / "arrays").glob("*.samples.jsonl"))
            row = {"n": n, "results_kib": (run / "results.json").stat().st_size / 1024, "sidecar_kib": sidecar / 1024,
                   "html_kib": len(html.encode()) / 1024, "render_s": render, "parse_s": parse,
                   "browser_load_s": load_ms / 1000 if load_ms is not None else None}
            rows.append(row)
            print(f"{n:7d} {row['results_kib']:17.0f} {row['sidecar_kib']:12.0f} {row['html_kib']:15.0f} "
                  f"{render:9.2f} {parse:8.3f} {_seconds(row['browser_load_s']):>15s}")
    print(json.dumps({"bench": "report_scale", "rows": rows}))


def _seconds(value: float | None) -> str:
    return "no chromium" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
