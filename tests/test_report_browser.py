"""The report rendered by a real browser: headless Chromium loads a matrix run's page without console
errors, and its screenshot shows the warnings box, the colour-scaled matrix and the curves.

Chromium comes from Debian (`apt-get install chromium`; `make test` installs it like Fashion-MNIST);
where it is missing the test skips and says how to get it."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _screenshot(page: Path, shot: Path, height: int) -> np.ndarray:
    """(height, 1400, 3) pixels of the page in headless Chromium, which must load it without console errors."""
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--enable-logging=stderr", "--v=0", f"--window-size=1400,{height}", f"--screenshot={shot}",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Failed to load" in line]
    assert console == [], console
    return np.asarray(Image.open(shot).convert("RGB"))


def _near(pixels: np.ndarray, rgb: tuple[int, int, int], tolerance: int = 6) -> int:
    return int((np.abs(pixels.astype(int) - np.array(rgb)).max(axis=-1) <= tolerance).sum())


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: `sudo apt-get install chromium` (make test does it "
                    "where it can)")
def test_the_report_renders_in_headless_chromium(matrix_run, tmp_path):
    run, _ = matrix_run
    pixels = _screenshot(run / "index.html", tmp_path / "report.png", 2600)
    assert pixels.shape[:2] == (2600, 1400)
    assert _near(pixels, (253, 236, 234)) > 5000  # the warnings box (#fdecea)
    assert _near(pixels, (255, 120, 160), 30) > 2000  # red matrix cells (accuracy near 0)
    assert _near(pixels, (31, 119, 180), 30) > 300  # matplotlib's first line colour: the curves are drawn


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: `sudo apt-get install chromium` (make test does it "
                    "where it can)")
def test_a_detection_report_says_what_the_attack_did(tmp_path):
    """The issue's example (DAG on the lab's detector, 4 scenes): every scene has its targets flipped, so
    no card says FAILED; the summary gives mAP before and after and the share flipped, in detection's words."""
    from advlab.cli.main import main

    run = tmp_path / "det"
    assert main(["attack", "--method", "dag", "--task", "detection", "-n", "4", "--out", str(run)]) == 0
    html = (run / "index.html").read_text(encoding="utf-8")
    dag = html[html.index('id="attack-0"'):html.index('id="attack-1"')]  # the DAG row's section (then its control)
    assert "FAILED" not in html and "not flipped" not in dag and dag.count(">targets flipped</span>") == 4
    control = html[html.index('id="attack-1"'):]  # the permuted control leaves the targets: grey, not red
    assert 'class="card failed"' not in control and control.count('<span class="badge kept">targets not flipped') == 4
    assert "mAP@0.5 clean → adv." in html and "targets flipped" in html and "top-1" not in html
    pixels = _screenshot(run / "index.html", tmp_path / "det.png", 2400)
    assert _near(pixels, (30, 122, 70), 8) > 400  # the four green "targets flipped" badges (#1e7a46)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: `sudo apt-get install chromium` (make test does it "
                    "where it can)")
def test_photos_shown_at_their_figure_size_render_and_the_summary_names_one_robust_accuracy(tmp_path):
    """A Boundary run on two ImageNet photos: the photos are JPEGs at the figure's size and the amplified
    perturbations PNGs; Chromium loads every one; the summary's column is the accuracy on the attack's own
    adversarials, never called a robust accuracy (the matrix's number is)."""
    from advlab.cli.main import main

    run = tmp_path / "boundary"
    assert main(["attack", "--method", "boundary", "-n", "2", "--steps", "25", "--candidates", "1", "--out", str(run),
                 "--quiet"]) == 0
    html = (run / "index.html").read_text(encoding="utf-8")
    assert html.count("data:image/jpeg;base64,") == 4 and "(robust accuracy)" not in html
    assert "acc. on its adversarials" in html
    pixels = _screenshot(run / "index.html", tmp_path / "boundary.png", 2400)
    assert _near(pixels, (128, 128, 128), 10) > 500  # the gray of the amplified perturbations (unchanged = 0.5)
