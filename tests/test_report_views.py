"""Per-task report views: a row's task picks its summary columns, card text, drawings and plot;
rows without a task (old results.json) render as classification (CPU, seconds)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from advlab.cli.main import main
from advlab.report import render_html
from advlab.report.views import SegmentationView, view_for

pytestmark = pytest.mark.usefixtures("in_tmp")


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("views") / "dag"
    assert main(["attack", "--method", "dag", "--task", "segmentation", "-n", "2", "--set", "max_iterations=20",
                 "--out", str(out)]) == 0
    return out


def _header_cells(html: str) -> list[str]:
    head = re.search(r'<table class="summary">\s*<thead><tr>(.*?)</tr></thead>', html, re.S).group(1)
    return [re.sub(r"<[^>]+>", "", cell) for cell in re.findall(r"<th[^>]*>.*?</th>", head, re.S)]


def test_a_segmentation_row_renders_with_its_view(seg_run: Path) -> None:
    html = (seg_run / "index.html").read_text(encoding="utf-8")
    headers = _header_cells(html)
    for column in SegmentationView.columns:
        assert column.header in headers
    assert html.count('<img class="figure" src="data:image/png;base64,') == 2 * 2 * 3  # rows x images x maps
    for caption in ("reference", "clean prediction", "adversarial prediction"):
        assert f'alt="{caption} ' in html
    assert 'class="swatch"' in html and "background" in html  # the legend names the classes shown
    assert "Share of target pixels still active vs. iterations" in html
    assert "targets hit" in html and "pixel accuracy" in html  # the segmentation card text


def test_rows_without_a_task_render_as_classification(seg_run: Path, tmp_path: Path) -> None:
    results = json.loads((seg_run / "results.json").read_text())
    for row in results["attacks"]:
        del row["task"]
    html = render_html(seg_run, results)
    headers = _header_cells(html)
    assert not any(column.header in headers for column in SegmentationView.columns)
    assert 'class="figure"' not in html  # no label maps: the classification view draws none
    assert view_for({}).task == "classification" and view_for({"task": "no-such-task"}).task == "classification"


def test_task_columns_are_blank_on_rows_of_other_tasks(seg_run: Path) -> None:
    results = json.loads((seg_run / "results.json").read_text())
    other = dict(results["attacks"][0], task="classification", method="fgsm")
    results["attacks"].append(other)
    html = render_html(seg_run, results)
    rows = re.findall(r"<tr(?: class=\"baseline\")?>\s*<td><a href=\"#attack-\d\">(.*?)</tr>", html, re.S)
    assert len(rows) == 3
    cells = [re.findall(r'<td class="n">(.*?)</td>', row) for row in rows]
    assert len({len(c) for c in cells}) == 1  # every row fills every column
    width = len(SegmentationView.columns)
    assert any("→" in cell for cell in cells[0]) and cells[2].count("—") >= width  # fgsm row: blank task cells
    assert torch.load(seg_run / results["attacks"][0]["arrays"], weights_only=True)["pred_adv"].shape[0] == 2
