"""``wmtui report`` end to end: the ``classic`` preset at a tiny scale, its report written and
opened in a real headless Chromium (skipped without one), ``--json``/``--open`` output, and
bad input as one line, exit 2, nothing written."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.session import Session
from engine.studies.scenarios import scenario_from_mapping, scenario_source
from wmtui.cli import app
from wmtui.cli import report as cli_report

try:  # the scenario runner moved out of scenarios.py
    from engine.studies.scenario_runner import prepare_scenario
except ImportError:  # pragma: no cover
    from engine.studies.scenarios import prepare_scenario  # type: ignore[attr-defined,no-redef]

cli_report.register(app)
cli_report.register(app)  # a second registration is a no-op
runner = CliRunner()

#: the classic preset, shrunk: a 2-epoch embedding on 512 synthetic images, a 30-step scan
#: whose rule flags the smallest class outright (a T far above every size) so that the
#: report has a reversed trigger and a removal phase to show
TINY_TRAIN = {
    "dataset": "synthetic",
    "train_size": 512,
    "test_size": 256,
    "epochs": 2,
    "optimizer": "adam",
    "lr": 0.003,
    "eval_every": 8,
    "device": "cpu",
}
TINY_SCAN = {
    "scan_steps": 30,
    "images": 200,
    "val_images": 50,
    "batch": 16,
    "report_every": 10,
    "rule": "either",
    "threshold": 1000.0,
}
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
#: appended to a copy of the page: the title says how many pictures and figures rendered
PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.from(document.images);
  var shown = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var svgs = Array.from(document.querySelectorAll('figure > svg'));
  var drawn = svgs.filter(function (s) {
    var box = s.getBoundingClientRect(); return box.width > 100 && box.height > 100; });
  document.title = 'probe img ' + shown.length + '/' + imgs.length
    + ' svg ' + drawn.length + '/' + svgs.length;
});
</script>"""


@pytest.fixture(scope="module")
def classic_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    raw = scenario_source("classic").read()
    raw["train"] = TINY_TRAIN
    raw["phases"][1]["params"] |= TINY_SCAN
    raw["phases"][1]["budget"] = {"data_fraction": 0.4, "epochs": 1}
    scenario = scenario_from_mapping(raw, name="classic")
    out = tmp_path_factory.mktemp("classic") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("WMTUI_DATA_DIR", str(shared_data_dir))
    try:
        job, root, sinks = prepare_scenario(scenario, scenario.config(), out)
        session = Session(job, [root.event_sink(), *sinks]).start()
        for _ in session.events():
            pass
    finally:
        mp.undo()
    assert session.status == "completed"
    return out


def test_json_prints_one_object_with_the_path(classic_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep" / "report.html"
    result = runner.invoke(app, ["report", str(classic_run), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.strip().splitlines()
    row = json.loads(line)
    assert row["event"] == "report" and row["kind"] == "scenario"
    assert row["path"] == str(out.resolve()) and out.is_file()
    assert {Path(f).name for f in row["figures"]} == {
        f"{name}.{ext}" for name in ("curves", "scan-1-gan") for ext in ("svg", "pdf")
    }
    page = out.read_text(encoding="utf-8")
    assert "http://" not in page and "https://" not in page
    assert "Embed the TEST watermark" in page and "reversed-trigger" in page
    assert "gan / gan-remove" in page  # the removal is a phase of its own on the curves


def test_open_prints_the_path_and_the_human_line_goes_to_stderr(
    classic_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r.html"
    result = runner.invoke(app, ["report", str(classic_run), "--out", str(out), "--open"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out.resolve())
    assert "report of scenario" in result.stderr


@pytest.mark.parametrize("case", ["missing", "not-a-run", "corrupt", "out-is-a-folder"])
def test_bad_input_is_one_line_exit_2_nothing_written(
    classic_run: Path, tmp_path: Path, case: str
) -> None:
    source, out = tmp_path / "src", tmp_path / "out" / "report.html"
    if case == "not-a-run":
        source.mkdir()
    elif case == "corrupt":
        source.mkdir()
        (source / "manifest.json").write_text('{"command": ')
    elif case == "out-is-a-folder":
        source, out = classic_run, tmp_path / "out"
        out.mkdir()
    result = runner.invoke(app, ["report", str(source), "--out", str(out)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wmtui: error:"), result.stderr
    assert "Traceback" not in result.output
    written = list((tmp_path / "out").rglob("*")) if (tmp_path / "out").exists() else []
    assert written == []


# -- a real browser ----------------------------------------------------------------------------
def browser() -> str | None:
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


def headless(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        binary,
        "--headless",
        "--no-sandbox",  # as root (CI containers) Chromium refuses to start without it
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={profile}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)


@pytest.mark.skipif(browser() is None, reason="no chromium installed (make chromium installs it)")
def test_the_classic_report_renders_in_chromium(classic_run: Path, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    binary = browser()
    assert binary is not None
    out = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(classic_run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    page = out.read_text(encoding="utf-8")
    pictures, figures = page.count("<img "), page.count("<svg")
    assert pictures >= 2 and figures == 2  # true and reversed triggers; curves and bars

    shot = tmp_path / "shot.png"
    headless(
        binary, tmp_path / "p1", f"--screenshot={shot}", "--window-size=1200,2000", out.as_uri()
    )
    assert shot.is_file(), "chromium wrote no screenshot"
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (2000, 1200)
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    assert pixels.std() > 10 and colours > 50, (pixels.std(), colours)

    probe = tmp_path / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    dom = headless(
        binary, tmp_path / "p2", "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()
    ).stdout
    title = re.search(r"<title>(probe[^<]*)</title>", dom)
    assert title is not None, dom[:500]
    assert title.group(1) == f"probe img {pictures}/{pictures} svg {figures}/{figures}"
