"""HTML report: numbers, inline images, escaping, self-containment, missing arrays (CPU, seconds)."""
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
from advlab.view import fmt
from advlab.view.images import amplified_perturbation
from advlab.view.plots import l2_vs_queries_png

N, C, H, W, T = 5, 3, 32, 32, 8
EVIL = "<script>alert(1)</script>"
SAME = 2  # the image whose x_adv equals x (a failed attack)


def _results() -> dict[str, Any]:
    samples = []
    for i in range(N):
        samples.append({
            "name": f"{EVIL}_{i}.jpg" if i == 0 else f"img_{i}\"&<>.png",
            "label": i, "label_name": EVIL if i == 0 else f"class \"&<> {i}",
            "clean_pred": i, "clean_pred_name": f"class {i}", "clean_conf": 0.9,
            "adv_pred": i if i == SAME else i + 1, "adv_pred_name": f"adv class {i}", "adv_conf": 0.4,
            "attacked": True, "success": i != SAME, "l2": None if i == SAME else 1.0 + i, "linf": 0.02,
            "queries": 1000 * (i + 1),
        })
    return {
        "schema": 1, "advlab_version": "0.1.0", "name": f"quick{EVIL}", "created": "2026-11-22T15:00:00Z",
        "seed": 0, "device": "cpu (2 threads)", "torch": "2.14.1", "precision": "fp32",
        "model": {"name": "mobilenet_v2", "weights": "IMAGENET1K_V1", "task": "classification",
                  "num_classes": 1000, "input_size": 32},
        "data": {"name": "imagenet-samples", "n": N, "label_source": "ground-truth"},
        "clean": {"accuracy": 0.9},
        "attacks": [{
            "method": "boundary", "backend": "ours", "defense": None, "adaptive": None, "setting": "plain model",
            "criterion": "untargeted", "target_class": None, "params": {"steps": 1000, "candidates": 4},
            "success_rate": 0.8, "fooling_ratio": 0.75, "accuracy": 0.1, "median_l2": 1.5, "median_linf": 0.03,
            "median_mse": 1.5e-5, "queries_median": 27000, "wall_s": 12.3, "model_images_per_s": 11000,
            "arrays": "arrays/boundary-0.pt", "samples": samples,
        }],
        "defenses": [{"method": "jpeg", "variant": "q75", "clean_accuracy": 0.85,
                      "accuracy_after_defense": {"boundary": 0.6}}],
    }


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, C, H, W, generator=g)
    x_adv = (x + 0.05 * torch.randn(N, C, H, W, generator=g)).clamp(0, 1)
    x_adv[SAME] = x[SAME]
    queries = torch.arange(1, T + 1, dtype=torch.int64)[:, None].repeat(1, N) * 500
    l2 = torch.linspace(10.0, 1.0, T)[:, None].repeat(1, N) * (1 + torch.rand(1, N, generator=g))
    l2[0, 1] = float("inf")
    (tmp_path / "arrays").mkdir()
    torch.save({"x": x, "x_adv": x_adv, "trace_queries": queries, "trace_l2": l2},
               tmp_path / "arrays" / "boundary-0.pt")
    (tmp_path / "results.json").write_text(json.dumps(_results()), encoding="utf-8")
    return tmp_path


def _img_uris(html: str, cls: str) -> list[str]:
    return re.findall(rf'<img class="{cls}" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)


def test_report_numbers_images_and_plot(run_dir: Path) -> None:
    out = render_report(run_dir)
    assert out == run_dir / "index.html" and out.is_file()
    html = out.read_text(encoding="utf-8")
    for text in ("80.0%", "75.0%", "10.0%", "90.0%", "1.50", "0.0300", "1.50e-05", "27,000", "12.3", "11,000",
                 "mobilenet_v2", "IMAGENET1K_V1", "imagenet-samples", "ground-truth", "fp32", "Moosavi-Dezfooli",
                 "steps", "1000", "candidates", "jpeg", "q75", "85.0%", "60.0%"):
        assert text in html, text
    for cls in ("orig", "adv", "pert"):
        assert len(_img_uris(html, cls)) == N, cls
    assert len(_img_uris(html, "plot")) == 1
    assert html.count("data:image/png;base64,") == 3 * N + 1
    assert "attack FAILED" in html


def test_report_escapes_everything(run_dir: Path) -> None:
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert '"&<>' not in html
    assert "&#34;&amp;&lt;&gt;" in html


def test_report_is_self_contained(run_dir: Path) -> None:
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    assert "@import" not in html and "url(" not in html
    srcs = re.findall(r'src="([^"]*)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)


def test_report_without_arrays(run_dir: Path) -> None:
    (run_dir / "arrays" / "boundary-0.pt").unlink()
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert "arrays/boundary-0.pt is missing" in html
    assert "data:image/png" not in html
    assert "80.0%" in html and "class 1" in html  # summary and per-image text are still there


def test_perturbation_png_is_gray_where_unchanged(run_dir: Path) -> None:
    html = render_report(run_dir).read_text(encoding="utf-8")
    png = base64.b64decode(_img_uris(html, "pert")[SAME])
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float64) / 255.0
    assert img.shape == (H, W, 3)
    assert abs(img.mean() - 0.5) < 0.01 and img.std() < 1e-6
    changed = np.asarray(Image.open(io.BytesIO(base64.b64decode(_img_uris(html, "pert")[0]))), dtype=np.float64)
    assert changed.std() > 1.0  # a real perturbation is visible


def test_sparse_results_render(tmp_path: Path) -> None:
    results = {"schema": 1, "model": {"name": "m"}, "clean": None, "defenses": None,
               "attacks": [{"method": "x", "success_rate": None, "median_l2": float("nan"), "params": None,
                            "samples": [None, {"name": "a.png"}], "defense": "jpeg", "adaptive": "bpda",
                            "arrays": "../../etc/passwd"},
                           {"method": "y", "arrays": "arrays/y-0.pt", "accuracy": "n/a"}]}
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    (tmp_path / "arrays").mkdir()
    (tmp_path / "arrays" / "y-0.pt").write_bytes(b"not a torch file")
    html = render_report(tmp_path).read_text(encoding="utf-8")
    assert "defense: jpeg, adaptive: bpda" in html
    assert "could not be read" in html and "../../etc/passwd lies outside the run directory" in html


def test_amplified_perturbation_and_formatting() -> None:
    x = torch.zeros(2, 1, 2, 2)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] = 0.1
    x_adv[0, 0, 1, 1] = -0.05
    p = amplified_perturbation(x, x_adv)
    assert p[0, 0, 0, 0] == pytest.approx(1.0) and p[0, 0, 1, 1] == pytest.approx(0.25)
    assert torch.all(p[1] == 0.5)
    assert (fmt.pct(0.9), fmt.num(1.5), fmt.sci(1.5e-5), fmt.integer(27000.4)) == ("90.0%", "1.50", "1.50e-05", "27,000")
    assert fmt.num(None) == fmt.MISSING and fmt.pct(float("nan")) == fmt.MISSING and fmt.num(float("inf")) == "∞"


def test_plot_handles_all_inf_and_draws_png() -> None:
    q = torch.arange(1, 5)[:, None].repeat(1, 3)
    assert l2_vs_queries_png(q, torch.full((4, 3), float("inf"))) is None
    png = l2_vs_queries_png(q, torch.rand(4, 3) + 0.1)
    assert png is not None and png.startswith(b"\x89PNG")


# ---------------------------------------------------------------- universal perturbations, multi-model, transfer
def _universal_results() -> dict[str, Any]:
    samples = [{"name": f"u{i}.png", "clean_pred": i, "adv_pred": i + 1 - i % 2, "success": False} for i in range(N)]
    uap = {"method": "universal", "backend": "ours", "model": "resnet18", "criterion": "untargeted",
           "params": {"solver": "sgd", "norm": "linf", "eps": 0.04}, "success_rate": None,
           "fooling_ratio": 0.7, "fooling_ratio_train": 0.724, "accuracy": 0.3,
           "perturbation_file": "arrays/universal-0.perturbation.pt",
           "perturbation_png": "arrays/universal-0.perturbation.png", "perturbation_l2": 3.21,
           "perturbation_linf": 0.04, "fooling_trace": [0.0, 0.41, 0.63, 0.72],
           "eval": {"data": "fashion-mnist:test", "n": 2000, "fooling_ratio": 0.7, "clean_accuracy": 0.9,
                    "accuracy": 0.3},
           "arrays": "arrays/universal-0.pt", "samples": samples}
    baseline = {**uap, "params": {"solver": "random", "norm": "linf", "eps": 0.04}, "fooling_ratio": 0.052,
                "fooling_ratio_train": 0.048, "fooling_trace": [0.048], "eval": None,
                "perturbation_png": "arrays/universal-0-random.perturbation.png", "arrays": "arrays/gone.pt",
                "baseline": "random perturbation of the same norm (Moosavi-Dezfooli et al. 2017)"}
    escaping = {"method": "universal", "model": EVIL, "perturbation_png": "../../etc/passwd",
                "fooling_trace": None, "fooling_ratio_train": None, "eval": {"n": None}}
    plain = {"method": "boundary", "model": "resnet18", "fooling_ratio": 0.5}
    return {
        "schema": 1, "name": "uap", "model": {"name": "resnet18"}, "clean": {"accuracy": 0.9},
        "data": {"name": "photos", "n": N, "eval": {"name": "fashion-mnist:test", "n": 2000}},
        "models": [{"name": "resnet18", "weights": "IMAGENET1K_V1", "clean_accuracy": 0.875},
                   {"name": EVIL, "weights": None, "clean_accuracy": None}, None],
        "attacks": [uap, baseline, escaping, plain],
        "transfer": {"eval_data": "photos", "models": ["mobilenet_v2", "resnet18", "vit_b_16"],
                     "perturbations": [{"model": "mobilenet_v2", "solver": "sgd", "file": "arrays/a.pt"},
                                       {"model": "resnet18", "solver": "deepfool", "file": "arrays/b.pt"}],
                     "matrix": [[0.8, 0.4, None], [0.35, 0.9, 0.123]]},
    }


@pytest.fixture()
def uap_dir(tmp_path: Path) -> Path:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(N, C, H, W, generator=g)
    v = 0.04 * torch.sign(torch.randn(C, H, W, generator=g))
    (tmp_path / "arrays").mkdir()
    torch.save({"x": x, "x_adv": (x + v).clamp(0, 1)}, tmp_path / "arrays" / "universal-0.pt")
    for name, side in (("universal-0", 24), ("universal-0-random", 16)):
        pixels = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / "arrays" / f"{name}.perturbation.png")
    (tmp_path / "results.json").write_text(json.dumps(_universal_results()), encoding="utf-8")
    return tmp_path


def _summary_rows(html: str) -> list[str]:
    body = re.search(r'<table class="summary">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return re.findall(r"<tr[ >].*?</tr>", body, re.S)


def test_universal_perturbation_inlined_with_fooling_ratios(uap_dir: Path) -> None:
    html = render_report(uap_dir).read_text(encoding="utf-8")
    uap = _img_uris(html, "uap")
    assert len(uap) == 2  # the UAP and its baseline; the ../../etc/passwd one is refused
    assert base64.b64decode(uap[0]) == (uap_dir / "arrays" / "universal-0.perturbation.png").read_bytes()
    assert "outside the run directory" in html and "root:" not in html
    assert "<script" not in html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'src="([^"]*)"', html))
    assert "arrays/universal-0.perturbation.pt" in html
    for text in ("72.4%", "70.0%", "4.8%", "5.2%", "fashion-mnist:test", "n = 2,000",
                 "90.0%", "30.0%", "3.21", "0.0400", "sgd", "linf"):
        assert text in html, text
    assert len(_img_uris(html, "trace")) == 1  # 4-pass trace; a 1-value trace draws nothing
    assert len(_img_uris(html, "orig")) == N and len(_img_uris(html, "pert")) == N
    assert "fooled (label changed)" in html and "not fooled" in html and "attack FAILED" not in html
    # card images (3 N) + 2 perturbations + 1 trace + 1 heat map
    assert html.count("data:image/png;base64,") == 3 * N + 2 + 1 + 1


def test_universal_summary_columns_and_baseline(uap_dir: Path) -> None:
    html = render_report(uap_dir).read_text(encoding="utf-8")
    head = re.search(r'<table class="summary">\s*<thead>(.*?)</thead>', html, re.S).group(1)
    assert "<th>model</th>" in head and "fooling (train)" in head
    rows = _summary_rows(html)
    assert len(rows) == 4
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r, re.S) for r in rows]
    assert all(len(c) == len(cells[0]) for c in cells)
    assert "resnet18" in cells[0][1] and "72.4%" in rows[0] and "70.0%" in rows[0]
    assert "random baseline" in cells[1][0] and "baseline" in rows[1] and "random baseline" not in rows[0]
    assert "&lt;script&gt;" in cells[2][1]
    assert "boundary" in cells[3][0] and "—" in rows[3]  # no train fooling ratio for non-universal rows
    assert re.search(r"<h2>universal · random baseline · resnet18[^<]*<span class=\"tag\">baseline</span></h2>", html)
    assert "IMAGENET1K_V1" in html and "87.5%" in html and "held-out data" in html


def test_transfer_table_and_heatmap(uap_dir: Path) -> None:
    html = render_report(uap_dir).read_text(encoding="utf-8")
    section = re.search(r'<section id="transfer">(.*?)</section>', html, re.S)
    assert section and "Transfer of universal perturbations" in section.group(1)
    table = re.search(r'<table class="transfer">(.*?)</table>', section.group(1), re.S).group(1)
    for text in ("mobilenet_v2", "resnet18", "vit_b_16", "UAP of mobilenet_v2 (sgd)", "UAP of resnet18 (deepfool)",
                 "80.0%", "40.0%", "35.0%", "90.0%", "12.3%"):
        assert text in table, text
    assert re.findall(r'<td class="n diag">([^<]*)</td>', table) == ["80.0%", "90.0%"]
    assert re.findall(r'<td class="n missing">([^<]*)</td>', table) == ["—"]
    assert "input sizes differ" in section.group(1)
    (heat,) = _img_uris(section.group(1), "heatmap")
    assert Image.open(io.BytesIO(base64.b64decode(heat))).size[0] > 200


def test_universal_keys_missing_or_broken(tmp_path: Path) -> None:
    (tmp_path / "arrays").mkdir()
    (tmp_path / "arrays" / "fake.png").write_bytes(b"not a png")
    results = {"schema": 1, "attacks": [{"method": "universal", "perturbation_png": "arrays/fake.png", "fooling_trace": [None, "x"],
                            "eval": "oops", "perturbation_l2": None},
                           {"method": "universal", "perturbation_png": "arrays/none.png", "fooling_trace": [0.1, None, 0.5]}],
               "models": "oops",
               "transfer": {"models": ["a", None], "perturbations": None, "matrix": [[0.5], "bad", [None, 0.2, 0.9]]}}
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    html = render_report(tmp_path).read_text(encoding="utf-8")
    assert "is not a PNG file" in html and "arrays/none.png is missing" in html
    assert len(_img_uris(html, "uap")) == 0 and len(_img_uris(html, "trace")) == 1
    assert "Transfer of universal perturbations" in html and "UAP of perturbation 1" in html
    assert "<th>model</th>" not in html
    results["transfer"] = {"models": [], "matrix": []}
    (tmp_path / "results.json").write_text(json.dumps(results), encoding="utf-8")
    assert "Transfer of universal" not in render_report(tmp_path).read_text(encoding="utf-8")


def test_the_summary_calls_nothing_but_the_matrix_a_robust_accuracy(run_dir: Path) -> None:
    """A Boundary row's accuracy on its adversarials is at any distance: the summary names it so, and its
    glossary says it is not the robust accuracy (the matrix of a threat model is)."""
    html = render_report(run_dir).read_text(encoding="utf-8")
    assert "acc. on its adversarials" in html and "Not a robust accuracy" in html
    assert "(robust accuracy)" not in html and "acc. after attack" not in html


def test_images_are_stored_at_the_size_they_are_shown_and_lossless_only_where_amplified() -> None:
    import base64
    import io

    from PIL import Image

    from advlab.view.images import FIGURE_PX, amplified_perturbation, image_uri

    photo = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(0))
    jpeg, png = image_uri(photo), image_uri(amplified_perturbation(photo, photo * 0.9), lossless=True)
    assert jpeg.startswith("data:image/jpeg;base64,") and png.startswith("data:image/png;base64,")
    for uri in (jpeg, png):
        side = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1]))).size
        assert side == (FIGURE_PX, FIGURE_PX)
    small = image_uri(torch.rand(1, 28, 28), min_side=96)  # enlarged pixel for pixel: PNG keeps the pixels sharp
    assert small.startswith("data:image/png;base64,")
