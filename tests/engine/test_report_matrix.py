"""A matrix recipe's report: the heatmap (an HTML table coloured by removed-rate, and a
figure), the Pareto planes per attack, the claims; self-contained; drawn by Chromium."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from engine.reports import build, make_report
from engine.reports.matrix_page import HEATMAP, PARETO, colour, pareto_points
from tests.engine.test_recipe_matrix import run_tiny_matrix
from tests.wmtui.test_cli_report import browser, headless


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    _recipe, run, result = run_tiny_matrix(tmp_path_factory.mktemp("matrix"))
    return run.out, result


def test_the_report_draws_the_heatmap_and_the_pareto_planes(matrix_run: tuple) -> None:
    out, result = matrix_run
    report = build(out)
    assert report.kind == "recipe"
    assert {HEATMAP, PARETO} <= set(report.figures)
    page = report.page
    table = re.search(rf"<table id='{HEATMAP}'.*?</table>", page, flags=re.S)
    assert table is not None
    cells = re.findall(
        r"<td style='background:(#[0-9a-f]{6})' title='([^']*)'>([^<]*)</td>", table.group(0)
    )
    assert len(cells) == 4  # 2 schemes x 2 attacks
    by_name = {c["name"]: c for c in result["cells"]}
    for shade, title, shown in cells:
        pair = title.split(":")[0]
        rate = by_name[f"{pair}: removed-rate"]["mean"]
        assert shown == f"{rate:.0f}%"
        assert shade == colour(rate / 100)  # red when removed, white when kept
    assert "no scheme survives" in page and "id='fig-matrix-pareto'" in page
    # the matrix comes first, before the per-cell comparison (thousands of rows for sok)
    assert page.index("<section id='matrix'") < page.index("<section id='comparison'")
    assert "http://" not in page and "https://" not in page and "<script" not in page


def test_the_pareto_points_are_the_trials_means(matrix_run: tuple) -> None:
    out, _ = matrix_run
    from engine.reports.collect import collect_recipe
    from engine.reports.matrix_page import recipe_matrix

    data = collect_recipe(out)
    matrix = recipe_matrix(data)
    assert matrix is not None
    points = pareto_points(matrix, data.trials)
    assert set(points) == {"jpeg-10", "wq"}
    for column, rows in points.items():
        assert set(rows) == {"pattern", "abstract"}
        for row, (acc, wm, _removed) in rows.items():
            trial = next(
                t
                for t in data.trials
                if t["params"]["attack"]["name"] == column and t["params"]["scheme"]["name"] == row
            )
            phase = next(p for p in trial["_phases"] if p["name"] == "attack")
            assert (acc, wm) == (phase["test_acc"], phase["wm_accuracy"])


@pytest.mark.skipif(browser() is None, reason="no chromium installed (make chromium installs it)")
def test_the_matrix_report_renders_in_chromium(matrix_run: tuple, tmp_path: Path) -> None:
    out, _ = matrix_run
    page = tmp_path / "report.html"
    make_report(out, page)
    probe = tmp_path / "probe.html"
    script = """<script>
window.addEventListener('load', function () {
  var t = document.getElementById('matrix-heatmap'); var box = t.getBoundingClientRect();
  var svgs = Array.from(document.querySelectorAll('figure > svg')).filter(function (s) {
    var b = s.getBoundingClientRect(); return b.width > 100 && b.height > 100; });
  document.title = 'probe cells ' + t.querySelectorAll('td').length + ' wide '
    + (box.width > 100) + ' svg ' + svgs.length;
});
</script>"""
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    binary = browser()
    assert binary is not None
    dom = headless(
        binary, tmp_path / "p", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()
    ).stdout
    title = re.search(r"<title>(probe[^<]*)</title>", dom)
    assert title is not None, dom[:300]
    assert title.group(1) == "probe cells 4 wide true svg 2"
