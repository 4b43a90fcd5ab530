"""The manual's report picture (docs/img/report.png): `configs/fashion-binarization.yaml` run, its report's top
1,680 px at 1,100 px wide shot with headless Chromium (as tests/test_report_browser.py shoots its own), reduced
to 128 colours.

    python bench/screenshots.py [--run RUN_DIR]   # --run: shoot an existing run instead of running the config

The config needs reports/models/fashion_cnn_madry.pt (`make fashion-binarization` trains it, then runs it).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PICTURE = ROOT / "docs" / "img" / "report.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing run of configs/fashion-binarization.yaml")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("screenshots: no chromium on PATH (make install installs Debian's)")
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "run"
            subprocess.run([str(ROOT / ".venv" / "bin" / "advlab"), "run", "configs/fashion-binarization.yaml",
                            "--out", str(run), "--quiet"], cwd=ROOT, check=True)
        shot = Path(tmp) / "shot.png"
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--window-size=1100,1680", f"--screenshot={shot}", (run / "index.html").resolve().as_uri()],
                       check=True, capture_output=True, timeout=120)
        Image.open(shot).convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(PICTURE,
                                                                                                  optimize=True)
    print(f"wrote {PICTURE}")


if __name__ == "__main__":
    main()
