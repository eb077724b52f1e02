"""Reports of sweep folders: a real two-trial sweep (local backend, one worker) read into
plain data and laid out as a page (mean ± sd per configuration, every trial's row, the first
trial in full, no URL); bad sweep folders are one line, exit 2, nothing written."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.errors import RunError
from engine.reports import SweepData, build, collect, make_report
from engine.studies.sweep_backends import run_sweep
from engine.studies.sweeps import grid_from_mapping, plan_sweep
from wmtui.cli import app
from wmtui.cli import report as cli_report

cli_report.register(app)
runner = CliRunner()

#: two seeds of a pattern embedding and an FT-Basic attack: one configuration, n = 2
GRID: dict[str, Any] = {
    "title": "tiny sweep, see https://example.org",
    "train": {
        "dataset": "synthetic",
        "train_size": 256,
        "test_size": 128,
        "epochs": 1,
        "optimizer": "adam",
        "lr": 0.003,
        "device": "cpu",
    },
    "phases": [
        {
            "name": "embed",
            "kind": "embed",
            "scheme": "pattern",
            "params": {"trigger": "square", "target_label": 3},
        },
        {
            "name": "ftb",
            "kind": "attack",
            "attack": "ft-basic",
            "budget": {"data_fraction": 0.5, "epochs": 1},
        },
    ],
    "axes": {"seed": [0, 1]},
}


@pytest.fixture(scope="module")
def sweep_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("report-sweep") / "sweep"
    plan = plan_sweep(grid_from_mapping(GRID, "tiny"), out, {"data_dir": str(shared_data_dir)})
    outcome = run_sweep(plan, "local", 1, 1)
    assert outcome.status == "completed", outcome.summary
    return out


def no_url(text: str) -> None:
    assert "http://" not in text and "https://" not in text


def rows_of(folder: Path) -> list[dict[str, Any]]:
    lines = (folder / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_sweep_is_read_with_its_aggregate_rows_and_first_trial(sweep_run: Path) -> None:
    data = collect(sweep_run)
    assert isinstance(data, SweepData)
    assert data.name == "tiny" and data.title.startswith("tiny sweep")
    assert data.axes == ["seed"] and data.seed_axes == ["seed"] and data.group_by == []
    assert [r["point"] for r in data.rows] == [{"seed": 0}, {"seed": 1}]
    assert {"embed.test_acc", "ftb.retention.key"} <= set(data.metrics)
    assert len(data.configs) == 1 and data.configs[0]["n"] == 2
    assert data.counts["completed"] == 2 and data.counts["trials"] == 2
    assert data.first is not None and data.first.kind == "scenario"
    assert data.first.path == sweep_run / data.rows[0]["run"]
    assert [p["name"] for p in data.first.phases] == ["embed", "ftb"]


def test_sweep_report_holds_the_aggregate_the_trials_and_no_url(
    sweep_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "r" / "report.html"
    report, figures = make_report(sweep_run, out)
    page = out.read_text(encoding="utf-8")
    assert report.kind == "sweep"
    no_url(page)
    found = re.findall(r"<section id='([\w-]+)'>", page)
    assert found[:4] == ["configs", "trials", "grid", "trial"]
    assert {"trial-phases", "trial-curves", "trial-configuration"} <= set(found)
    configs = page[page.index("<section id='configs'>") : page.index("<section id='trials'>")]
    assert "<th>n</th>" in configs and "<th>ftb.retention.key</th>" in configs
    assert "<td class='num'>2</td>" in configs and configs.count(" ± ") >= 4
    assert "<svg" in configs  # the bar chart per configuration
    trials = page[page.index("<section id='trials'>") : page.index("<section id='grid'>")]
    for row in rows_of(sweep_run):
        assert f"<code>{row['trial']}</code>" in trials
        assert f"<code>{row['run']}</code>" in trials
    assert trials.count("<td>completed</td>") == 2
    assert "complete</span> 2 of 2 trials completed" in page
    names = {p.name for p in figures}
    assert {"configs.svg", "configs.pdf", "trial-curves.svg"} <= names


def test_a_failed_trial_and_a_sweep_without_manifest_still_report(
    sweep_run: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(sweep_run, folder)
    (folder / "manifest.json").unlink()  # results.jsonl and summary.json say it is a sweep
    rows = rows_of(folder)
    rows[0] |= {"status": "failed", "metrics": {}, "error": "no data at https://x.org"}
    rows[1]["run"] = "../elsewhere"  # never read outside the sweep's folder
    (folder / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = json.loads((folder / "summary.json").read_text())
    summary |= {"completed": 1, "failed": 1, "complete": False, "remaining": 0}
    (folder / "summary.json").write_text(json.dumps(summary))
    data = collect(folder)
    assert isinstance(data, SweepData) and data.first is not None
    assert data.first.path.name == rows[0]["trial"]  # the failed row's folder, still there
    page = build(folder).page
    no_url(page)
    assert "failed trials</span> 1 of 2 trials completed, 1 failed" in page
    assert "no data at https:&#47;&#47;x.org" in page


def corrupt(case: str, sweep_run: Path, folder: Path) -> Path:
    shutil.copytree(sweep_run, folder)
    if case == "results":
        with (folder / "results.jsonl").open("a") as stream:
            stream.write('{"trial": "cut sho\n')
    elif case == "row":
        (folder / "results.jsonl").write_text("[1, 2]\n")
    elif case == "summary":
        (folder / "summary.json").write_text("{")
    elif case == "no-results":
        (folder / "results.jsonl").unlink()
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("results", "corrupt: .* line 3 is not a row"),
        ("row", "corrupt: .* line 1 is not a row"),
        ("summary", "sweep summary is corrupt"),
        ("no-results", "written no results yet"),
    ],
)
def test_a_corrupt_sweep_is_one_error_and_nothing_written(
    sweep_run: Path, tmp_path: Path, case: str, message: str
) -> None:
    folder = corrupt(case, sweep_run, tmp_path / "bad")
    out = tmp_path / "out" / "report.html"
    with pytest.raises(RunError, match=message) as caught:
        make_report(folder, out)
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_the_cli_reports_a_sweep_and_refuses_a_corrupt_one(sweep_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "ok" / "report.html"
    result = runner.invoke(app, ["report", str(sweep_run), "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kind"] == "sweep"
    bad = corrupt("results", sweep_run, tmp_path / "bad")
    result = runner.invoke(app, ["report", str(bad), "--out", str(tmp_path / "no" / "r.html")])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "results.jsonl" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "no").exists()
