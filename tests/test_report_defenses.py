"""Report: the Defenses section (no defense vs. non-adaptive vs. adaptive, BPDA note, denoiser gallery)."""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.report import render_report
from advlab.report.defenses import MIN_SIDE, split_key

R, C, H, W = 3, 1, 28, 28
EVIL = "<script>alert(1)</script>"


def _gallery_rows() -> list[dict[str, Any]]:
    return [{"attack": "pgd", "name": f"img_00{i}.png", "label": 8, "label_name": "Bag", "clean_pred": 8,
             "clean_pred_name": "Bag", "adv_pred": 4, "adv_pred_name": "Coat",
             "denoised_pred": 8 if i != 1 else 4, "denoised_pred_name": "Bag" if i != 1 else "Coat"}
            for i in range(R)]


def _results() -> dict[str, Any]:
    plain = {"method": "pgd", "backend": "ours", "defense": None, "adaptive": None, "setting": "plain model",
             "accuracy": 0.02}
    adaptive = {"method": "pgd", "backend": "ours", "defense": "hgd", "defense_variant": "lgd", "adaptive": "exact",
                "setting": "defended model (adaptive)", "accuracy": 0.01}
    hgd = {"method": "hgd", "variant": "lgd", "params": {"checkpoint": "x.pt", "width": 32}, "differentiable": True,
           "adaptive_gradient": "exact", "model": "fashion_cnn", "clean_accuracy": 0.87,
           "clean_accuracy_undefended": 0.88, "accuracy_without_defense": {"fgsm": 0.30, "pgd": 0.02},
           "accuracy_after_defense": {"fgsm": 0.80, "fgsm(adaptive)": 0.10, "pgd": 0.75, "pgd(adaptive)": 0.01},
           "gallery": {"file": "arrays/defense-0-gallery.pt", "rows": _gallery_rows()}}
    jpeg = {"method": "jpeg", "variant": "q75", "params": {"quality": 75}, "differentiable": False,
            "adaptive_gradient": "bpda", "clean_accuracy": 0.86, "clean_accuracy_undefended": 0.88,
            "accuracy_without_defense": {"pgd-1": 0.02},
            "accuracy_after_defense": {"pgd-1": 0.45, "pgd-1(adaptive)": 0.03},
            "gallery": {"file": "arrays/gone.pt", "rows": [{"attack": "pgd-1", "name": "lost.png"}]}}
    evil = {"method": EVIL, "variant": EVIL, "params": {EVIL: EVIL}, "clean_accuracy": None,
            "accuracy_after_defense": {EVIL: 0.5, f"{EVIL}(adaptive)": 0.25}, "gallery": {"rows": [{"name": EVIL}]}}
    old = {"method": "bits", "variant": "b3", "clean_accuracy": 0.85, "accuracy_after_defense": {"boundary": 0.6}}
    return {"schema": 1, "name": "defended", "clean": {"accuracy": 0.88}, "attacks": [plain, adaptive],
            "defenses": [hgd, jpeg, evil, old, None, {}]}


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    ramp = torch.linspace(0, 1, W).expand(R, C, H, W).clone()
    x_adv = (ramp + 0.1 * torch.sign(torch.randn(R, C, H, W, generator=torch.Generator().manual_seed(0)))).clamp(0, 1)
    denoised = (ramp + 0.5 * (x_adv - ramp)).clamp(0, 1)
    denoised[2] = x_adv[2]  # nothing removed: a uniformly gray noise image
    (tmp_path / "arrays").mkdir()
    torch.save({"x": ramp, "x_adv": x_adv, "denoised": denoised}, tmp_path / "arrays" / "defense-0-gallery.pt")
    (tmp_path / "results.json").write_text(json.dumps(_results()), encoding="utf-8")
    return tmp_path


def _section(html: str, anchor: str) -> str:
    return re.search(rf'<section id="{anchor}" class="defense">(.*?)</section>', html, re.DOTALL).group(1)


def _row(section: str, key: str) -> list[str]:
    for row in re.findall(r"<tr>(.*?)</tr>", section, re.DOTALL):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.DOTALL)
        if cells and cells[0] == key:
            return cells[1:]
    raise AssertionError(f"no row {key!r}")


def _uris(html: str, cls: str) -> list[str]:
    return re.findall(rf'<img class="{cls}" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)


def test_accuracy_columns_and_gradient_notes(run_dir: Path) -> None:
    html = render_report(run_dir).read_text(encoding="utf-8")
    hgd = _section(html, "defense-0")
    assert "<h3>hgd — lgd (fashion_cnn)</h3>" in hgd
    for header in ("no defense", "defended, non-adaptive", "(examples made on the bare model)",
                   "defended, adaptive", "(attack on the defended model)"):
        assert header in hgd, header
    assert _row(hgd, "pgd") == ["2.0%", "75.0%", "1.0%", "+73.0 pp", "+74.0 pp"]
    assert _row(hgd, "fgsm") == ["30.0%", "80.0%", "10.0%", "+50.0 pp", "+70.0 pp"]
    assert "clean (no attack)" in hgd and "88.0%" in hgd and "87.0%" in hgd and "-1.0 pp" in hgd
    assert "exact gradients through the defense" in hgd and "BPDA" not in hgd
    assert "checkpoint" in hgd and "x.pt" in hgd and "width" in hgd
    assert 'href="#attack-1"' in hgd and 'href="#attack-0"' not in hgd  # only the row run against hgd
    assert "defense: hgd (lgd), adaptive: exact" in html

    jpeg = _section(html, "defense-1")
    assert _row(jpeg, "pgd-1") == ["2.0%", "45.0%", "3.0%", "+43.0 pp", "+42.0 pp"]
    assert "BPDA: identity backward pass through the non-differentiable defense (Athalye et al. 2018)" in jpeg
    assert "Athalye" in html and "Liao" in html  # the legend


def test_gallery_four_images_per_row(run_dir: Path) -> None:
    html = render_report(run_dir).read_text(encoding="utf-8")
    hgd = _section(html, "defense-0")
    cards = re.findall(r'<div class="card quad [a-z]+">(.*?)</div>\s*</div>', hgd, re.DOTALL)
    assert len(cards) == R
    assert all(card.count("<img") == 4 for card in cards)
    for cls in ("def-clean", "def-adv", "def-denoised", "def-removed"):
        assert len(_uris(hgd, cls)) == R, cls
    for text in ("img_000.png", "label: Bag #8", "pred: Coat #4", "defense restored the label",
                 "still misclassified after the defense", "attack: pgd"):
        assert text in hgd, text
    clean = Image.open(io.BytesIO(base64.b64decode(_uris(hgd, "def-clean")[0])))
    assert clean.size == (MIN_SIDE, MIN_SIDE)  # 28x28 enlarged by 4 with nearest-neighbour
    px = np.asarray(clean, dtype=np.int64)
    assert (px[::4, ::4].repeat(4, 0).repeat(4, 1) == px).all()
    gray = np.asarray(Image.open(io.BytesIO(base64.b64decode(_uris(hgd, "def-removed")[2]))), dtype=np.float64)
    assert abs(gray.mean() / 255 - 0.5) < 0.01 and gray.std() < 1e-6
    removed = np.asarray(Image.open(io.BytesIO(base64.b64decode(_uris(hgd, "def-removed")[0]))), dtype=np.float64)
    assert removed.std() > 1.0
    # each removed-noise panel is amplified to its own max |value|, which its caption gives (issue 22, section 5:
    # a denoiser that shifts one colour by 0.001 fills its panel with that colour; the caption shows how little)
    assert re.findall(r"max \|Δ\|: ([^<]*)</figcaption>", hgd)[:3] == ["0.0500", "0.0500", "0"]
    assert all(s.startswith("data:image/png;base64,") for s in re.findall(r'src="([^"]*)"', html))


def test_escaping_missing_gallery_and_old_entry(run_dir: Path) -> None:
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    evil = _section(html, "defense-2")
    assert "<h3>&lt;script&gt;alert(1)&lt;/script&gt; — &lt;script&gt;alert(1)&lt;/script&gt;</h3>" in evil
    assert _row(evil, "&lt;script&gt;alert(1)&lt;/script&gt;") == ["—", "50.0%", "25.0%", "—", "+25.0 pp"]
    assert "not recorded" in evil and "No gallery file was recorded" in evil
    jpeg = _section(html, "defense-1")
    assert "arrays/gone.pt is missing" in jpeg and "lost.png" in jpeg and "<img" not in jpeg
    old = _section(html, "defense-3")
    assert "<h3>bits — b3</h3>" in old and _row(old, "boundary") == ["—", "60.0%", "—", "—", "—"]
    assert "85.0%" in old
    assert html.count('<section id="defense-') == 5  # hgd, jpeg, evil, old and the empty entry; None is skipped
    assert '<table class="defenses">' in html  # the overview of several defenses


def test_broken_or_sparse_defenses_render(tmp_path: Path) -> None:
    (tmp_path / "arrays").mkdir()
    (tmp_path / "arrays" / "bad.pt").write_bytes(b"not a torch file")
    torch.save({"x": torch.rand(2, 3, 8, 8), "x_adv": torch.rand(2, 3, 8, 8)}, tmp_path / "arrays" / "nodenoised.pt")
    results = {"schema": 1, "attacks": None, "defenses": [
        {"method": "hgd", "gallery": {"file": "arrays/bad.pt", "rows": "oops"}, "accuracy_after_defense": 0.4,
         "accuracy_without_defense": None, "params": None, "differentiable": False},
        {"gallery": {"file": "arrays/nodenoised.pt", "rows": [None]}, "accuracy_after_defense": {"a(adaptive)": 0.1}},
        {"gallery": {"file": "../../etc/passwd"}},
        {"gallery": "oops", "accuracy_after_defense": None, "clean_accuracy": float("nan")},
    ]}
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    html = render_report(tmp_path).read_text(encoding="utf-8")
    assert "could not be read" in html and "outside the run directory" in html and "root:" not in html
    assert "&#39;denoised&#39;" in html  # the file without a denoised tensor is named as unusable
    assert "BPDA" in _section(html, "defense-0")  # differentiable: false without adaptive_gradient
    assert _row(_section(html, "defense-1"), "a") == ["—", "—", "10.0%", "—", "—"]
    assert "<img" not in html
    results["defenses"] = None
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert "<h2 id=\"defenses\">" not in render_report(tmp_path).read_text(encoding="utf-8")


def test_split_key() -> None:
    assert split_key("pgd(adaptive)") == ("pgd", True)
    assert split_key("pgd-1 (adaptive)") == ("pgd-1", True)
    assert split_key("pgd-1") == ("pgd-1", False)
    assert split_key("(adaptive)") == ("(adaptive)", False)
