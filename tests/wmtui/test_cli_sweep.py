"""``wmtui sweep`` from the command line: the minimal example grid run through, a sweep whose
driver is killed mid-way resumed to the same results without rerunning finished trials, and
bad grids or options as one line with exit code 2."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from engine.studies.presets import preset_dir
from engine.studies.sweep_results import read_rows
from engine.studies.sweeps import TRIALS
from wmtui.cli import sweep as sweep_cli

ROOT = Path(__file__).resolve().parents[2]
MINIMAL = Path(str(preset_dir("sweep grid") / "minimal.toml"))
#: the minimal grid made tiny (about a second a trial): what the kill-and-resume test runs
TINY = (
    MINIMAL.read_text()
    .replace("train_size = 4096", "train_size = 512")
    .replace("test_size = 512", "test_size = 128")
    .replace("epochs = 3", "epochs = 1")
    .replace("data_fraction = 0.2, epochs = 5", "data_fraction = 0.5, epochs = 3")
)
#: the real app with ``sweep`` added the way wmtui/cli/main.py adds its commands
DRIVER = "from wmtui.cli import sweep; from wmtui.cli.main import app; sweep.register(app); app()"
runner = CliRunner()


def cli_app() -> typer.Typer:
    from wmtui.cli.main import app

    sweep_cli.register(app)  # a no-op once main.py registers it
    return app


def metrics_of(out: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each trial's status and metrics, less an attack's wall time (it differs every run)."""
    return {
        r["trial"]: (r["status"], {k: v for k, v in r["metrics"].items() if "cost.sec" not in k})
        for r in read_rows(out)
    }


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sweep-data")


def run_cli(args: list[str], data_dir: Path) -> Any:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WMTUI_DATA_DIR", str(data_dir))  # the spawned workers inherit it
        return runner.invoke(cli_app(), args)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """the minimal preset (the grid docs/sweeps.md shows), uninterrupted, on two workers."""
    out = tmp_path_factory.mktemp("sweeps") / "minimal"
    result = run_cli(["sweep", str(MINIMAL), "--workers", "2", "--out", str(out)], data_dir)
    assert result.exit_code == 0, result.output
    assert "minimal: 4/4 trials completed, 0 failed (mean ± std over seed)" in result.output
    assert "| target | n | embed.test_acc |" in result.output
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    grid = tmp_path_factory.mktemp("grids") / "tiny.toml"
    grid.write_text(TINY)
    return grid


def test_minimal_grid_runs_four_trials_and_averages_over_seeds(baseline: Path) -> None:
    rows = read_rows(baseline)
    assert [r["status"] for r in rows] == ["completed"] * 4
    summary = json.loads((baseline / "summary.json").read_text())
    assert [c["n"] for c in summary["configs"]] == [2, 2]
    assert all(c["metrics"]["embed.test_acc"]["mean"] > 0.5 for c in summary["configs"])


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(
    tiny: Path, data_dir: Path, tmp_path: Path
) -> None:
    whole = tmp_path / "whole"
    assert run_cli(["sweep", str(tiny), "--out", str(whole)], data_dir).exit_code == 0
    out = tmp_path / "killed"
    env = {**os.environ, "WMTUI_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    args = ["sweep", str(tiny), "--workers", "2", "--out", str(out), "--json"]
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # its own process group: the workers are in it
    )
    done: list[str] = []
    try:
        assert driver.stdout is not None
        for line in driver.stdout:
            event = json.loads(line)
            if event.get("event") == "trial" and event["status"] == "completed":
                done.append(event["trial"])
            if len(done) == 2:
                break
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and its workers, at once
        driver.wait(10)
        assert _group_ends(driver.pid, 10.0), "a worker outlived the kill"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    assert len(done) == 2
    assert len(read_rows(out)) == 4
    # the two we read of, and any the driver finished before the kill while its output
    # waited in the pipe (a loaded machine): the completed trial folders are what resumes
    on_disk = {
        folder.name
        for folder in (out / TRIALS).iterdir()
        if '"status": "completed"' in _text(folder / "summary.json")
    }
    assert set(done) <= on_disk and len(on_disk) < 4
    finished = {
        p: p.stat().st_mtime_ns
        for key in on_disk
        for p in (out / TRIALS / key).rglob("*")
        if p.is_file()
    }

    result = run_cli(args, data_dir)
    assert result.exit_code == 0, result.output
    events = json_lines(result.stdout)
    kinds = sorted(e["status"] for e in events if e["event"] == "trial")
    rest = 4 - len(on_disk)
    assert kinds == sorted(["completed"] * rest + ["kept"] * len(on_disk) + ["started"] * rest)
    assert {e["trial"] for e in events if e.get("status") == "kept"} == on_disk
    assert events[-1]["event"] == "sweep" and events[-1]["status"] == "completed"
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not rerun
    assert metrics_of(out) == metrics_of(whole)  # as if it had never been killed


def _group_ends(group: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


BASE = MINIMAL.read_text().split("[axes]")[0]


@pytest.mark.parametrize(
    ("axes", "message"),
    [
        (
            'target = [3]\n"phases.ftb.budget.data_fractoin" = [0.1]',
            "unknown axis target 'phases.ftb.budget.data_fractoin' (did you mean "
            "'phases.ftb.budget.data_fraction'?)",
        ),
        (
            'target = [3]\n"phases.embed.params.trigger_sise" = [4]',
            "(did you mean 'phases.embed.params.trigger_size'?)",
        ),
        ("seed = []\ntarget = [3]", "axis 'seed' must be a non-empty list of values"),
        (
            'target = [3]\n[[zip]]\nseed = [0, 1]\n"train.lr" = [0.1]',
            "the axes of a zip group need equal lengths (seed has 2, train.lr has 1)",
        ),
    ],
)
def test_bad_grid_files_exit_2_with_one_line(axes: str, message: str, tmp_path: Path) -> None:
    grid = tmp_path / "bad.toml"
    grid.write_text(f"{BASE}[axes]\n{axes}\n")
    result = runner.invoke(cli_app(), ["sweep", str(grid), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wmtui: error: {grid}")
    assert message in lines[0]
    assert not (tmp_path / "out").exists()  # nothing ran, nothing was written


def test_an_unknown_plugin_parameter_in_a_phase_is_named(tmp_path: Path) -> None:
    grid = tmp_path / "bad.toml"
    grid.write_text(MINIMAL.read_text().replace("trigger = ", "triger = "))
    result = runner.invoke(cli_app(), ["sweep", str(grid)])
    assert result.exit_code == 2
    assert "(did you mean 'trigger'?)" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_ray_backend_without_ray_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    args = ["sweep", str(MINIMAL), "--backend", "ray", "--out", str(tmp_path / "out")]
    result = runner.invoke(cli_app(), args)
    assert result.exit_code == 2
    assert result.output.strip() == (
        "wmtui: error: the ray backend needs Ray: pip install 'wmtui[ray]' "
        "(or pip install 'ray[tune]')"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--backend", "rey"], "unknown backend 'rey' (did you mean 'ray'?)"),
        (["--address", "1.2.3.4:6379"], "--address is for --backend ray"),
        (["--workers", "0"], "--workers must be between 1 and 1024"),
        (["--device", "gpu"], "unknown device 'gpu'"),
    ],
)
def test_bad_options_exit_2(args: list[str], message: str) -> None:
    result = runner.invoke(cli_app(), ["sweep", str(MINIMAL), *args])
    assert result.exit_code == 2 and message in result.output


def test_dry_run_lists_the_trials_and_what_is_done(baseline: Path) -> None:
    args = ["sweep", str(MINIMAL), "--out", str(baseline), "--dry-run", "--json"]
    result = runner.invoke(cli_app(), args)
    assert result.exit_code == 0
    rows = json_lines(result.stdout)
    assert len(rows) == 4 and all(r["done"] for r in rows)
    assert [r["point"] for r in rows][:2] == [{"seed": 0, "target": 3}, {"seed": 0, "target": 7}]


async def test_the_browser_lists_the_trials_and_enter_picks_one_to_replay(baseline: Path) -> None:
    from textual.widgets import DataTable

    from wmtui.tui.replay import ReplaySession
    from wmtui.tui.sweep_app import SweepBrowser

    app = SweepBrowser(baseline, cursor=1)
    async with app.run_test(size=(160, 20)) as pilot:
        table = app.query_one(DataTable)
        assert table.row_count == 4
        labels = [str(c.label) for c in table.ordered_columns]
        assert labels[:5] == ["trial", "seed", "target", "status", "s"]
        assert "ftb.retention.key" in labels
        await pilot.press("down", "enter")
    rows = read_rows(baseline)
    assert app.return_value == baseline / rows[2]["run"]
    assert ReplaySession(app.return_value).duration > 0  # the trial's whole recording


async def test_live_the_browser_follows_the_results_and_quitting_stops_the_driver(
    baseline: Path, tmp_path: Path
) -> None:
    """``sweep --tui``: the table re-reads ``results.jsonl`` while the driver runs, and the
    driver (here a stand-in that only waits for its Ctrl-C) is stopped when the browser quits."""
    import shutil
    import subprocess
    import sys

    from textual.widgets import DataTable, Static

    from wmtui.tui.sweep_app import SweepBrowser, stop_driver

    out = tmp_path / "live"
    shutil.copytree(baseline, out)
    rows = read_rows(out)
    running = [{**rows[0], "status": "running"}, *rows[1:]]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in running))
    wait = "import signal, sys, time\nsignal.signal(signal.SIGINT, lambda *a: sys.exit(130))\n"
    driver = subprocess.Popen([sys.executable, "-c", wait + "time.sleep(60)"])
    app = SweepBrowser(out, driver=driver)
    async with app.run_test(size=(160, 20)) as pilot:
        table = app.query_one(DataTable)
        assert str(table.get_cell_at((0, 3))) == "running"
        title = str(app.query_one("#sweep-title", Static).render())
        assert "sweep running, 1 trial(s) now" in title
        (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        await pilot.pause(1.5)  # one refresh
        assert str(table.get_cell_at((0, 3))) == "completed"
        await pilot.press("q")
    assert driver.poll() is None  # the browser leaves the stop to browse()
    stop_driver(driver)
    assert driver.returncode == 130


def test_list_shows_every_preset_grid_with_its_trial_count() -> None:
    from engine.studies.sweeps import grid_names, load_grid

    result = runner.invoke(cli_app(), ["sweep", "--list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["grid"] for r in rows] == grid_names() and "minimal" in grid_names()
    assert all(r["trials"] == len(load_grid(r["grid"]).trials) for r in rows)
    text = runner.invoke(cli_app(), ["sweep", "--list"])
    assert text.exit_code == 0
    for row in rows:
        assert row["grid"].ljust(12) + row["title"][:20] in text.stdout
    missing = runner.invoke(cli_app(), ["sweep"])
    assert missing.exit_code == 2
    assert missing.output.strip() == (
        f"wmtui: error: name a sweep grid: {', '.join(grid_names())} or a TOML file"
    )
