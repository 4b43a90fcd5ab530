"""Per-task report views: a row's task picks its summary table, glossary, card text, drawings and
plot; rows without a task (old results.json) render as the catalog's first task (CPU, seconds)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from advlab.cli.main import main
from advlab.report import render_html
from advlab.report.views import view_for
from advlab.tasks import get_task
from advlab.view.task_view import TaskView

SEGMENTATION, CLASSIFICATION = get_task("segmentation").view, get_task("classification").view

pytestmark = pytest.mark.usefixtures("in_tmp")


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("views") / "dag"
    assert main(["attack", "--method", "dag", "--task", "segmentation", "-n", "2", "--set", "max_iterations=20",
                 "--out", str(out)]) == 0
    return out


def _header_cells(html: str, table: int = 0) -> list[str]:
    head = re.findall(r'<table class="summary">\s*<thead><tr>(.*?)</tr></thead>', html, re.S)[table]
    return [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<th[^>]*>.*?</th>", head, re.S)]


def test_a_segmentation_row_renders_with_its_view(seg_run: Path) -> None:
    html = (seg_run / "index.html").read_text(encoding="utf-8")
    headers = _header_cells(html)
    for column in SEGMENTATION.columns:
        assert column.header in headers
    assert "clean acc." not in headers and "acc. on its adversarials" not in html  # no classification words
    assert "top-1" not in html and "mIoU clean → adv." in html  # its own glossary
    assert html.count('<img class="figure" src="data:image/png;base64,') == 2 * 2 * 3  # rows x images x maps
    for caption in ("reference", "clean prediction", "adversarial prediction"):
        assert f'alt="{caption} ' in html
    assert 'class="swatch"' in html and "background" in html  # the legend names the classes shown
    assert "Share of target pixels still active vs. iterations" in html
    assert "targets hit" in html and "pixel accuracy" in html  # the segmentation card text


def test_rows_without_a_task_render_as_the_first_task(seg_run: Path, tmp_path: Path) -> None:
    results = json.loads((seg_run / "results.json").read_text())
    for row in results["attacks"]:
        del row["task"]
    html = render_html(seg_run, results)
    headers = _header_cells(html)
    assert [c.header for c in CLASSIFICATION.columns if c.needs is None] == headers[4:-2]
    assert 'class="figure"' not in html  # no label maps: the classification view draws none
    assert view_for({}) is CLASSIFICATION and view_for({"task": "segmentation"}) is SEGMENTATION
    assert type(view_for({"task": "no-such-task"})) is TaskView  # an unknown task: the base view, not another's


def test_each_task_gets_its_own_summary_table(seg_run: Path) -> None:
    results = json.loads((seg_run / "results.json").read_text())
    other = dict(results["attacks"][0], task="classification", method="fgsm")
    results["attacks"].append(other)
    html = render_html(seg_run, results)
    assert html.count('<table class="summary">') == 2
    first, second = _header_cells(html, 0), _header_cells(html, 1)
    assert [c.header for c in SEGMENTATION.columns] == first[4:-2]
    assert "clean acc." in second and "mIoU clean → adv." not in second
    rows = re.findall(r"<tr(?: class=\"baseline\")?>\s*<td><a href=\"#attack-\d\">(.*?)</tr>", html, re.S)
    assert len(rows) == 3
    cells = [re.findall(r'<td class="n">(.*?)</td>', row) for row in rows]
    assert [len(c) for c in cells] == [len(first) - 4] * 2 + [len(second) - 4]  # every row fills its table
    assert any("→" in cell for cell in cells[0])
    assert torch.load(seg_run / results["attacks"][0]["arrays"], weights_only=True)["pred_adv"].shape[0] == 2


def test_the_gallery_reads_the_distances_the_run_measured(tmp_path):
    """Distances are measured once, by the run (arrays' dist_*), and the report reads them; only arrays
    written before they were stored are measured again."""
    from advlab.report.gallery import build_gallery

    x = torch.zeros(2, 3, 4, 4)
    x_adv = x.clone()
    x_adv[:, 0, 0, 0] = 0.5  # an L2 of 0.5 in the images themselves
    (tmp_path / "arrays").mkdir()
    torch.save({"x": x, "x_adv": x_adv, "dist_l2": torch.tensor([0.25, 0.75])}, tmp_path / "arrays" / "a.pt")
    torch.save({"x": x, "x_adv": x_adv}, tmp_path / "arrays" / "old.pt")
    row = {"task": "a-plugin-task", "arrays": "arrays/a.pt", "samples": [{"name": "a", "success": True}] * 2}
    stored = build_gallery(tmp_path, row)
    assert [c.distance_text.split(" ·")[0] for c in stored.cards] == ["L2 0.250", "L2 0.750"]
    measured = build_gallery(tmp_path, {**row, "arrays": "arrays/old.pt"})
    assert [c.distance_text.split(" ·")[0] for c in measured.cards] == ["L2 0.500", "L2 0.500"]
