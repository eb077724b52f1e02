"""The playground with scenarios: start screen, phase editing, mid-run controls, a whole
short scenario on synthetic data, snapshots, and `wmtui run` headless."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine import commands as cmd
from engine.studies.scenarios import Scenario, load_scenario, preset_names
from tests.wmtui.fakes import FakeSession, scenario_script, training_script
from wmtui.cli import app as cli_app
from wmtui.tui.app import WmtuiApp
from wmtui.tui.sessions import scenario_session

TINY_SCENARIO = """
title = "tiny"
description = "train a little, then fine-tune it a little"

[train]
dataset = "synthetic"
train_size = 512
test_size = 128
epochs = 1
optimizer = "adam"
lr = 0.003
eval_every = 4
device = "cpu"

[[phases]]
name = "owner"
kind = "embed"
scheme = "pattern"
params = { trigger = "square", target_label = 3 }

[[phases]]
name = "thief"
kind = "attack"
attack = "ft-basic"
params = { batch = 32 }
budget = { data_fraction = 0.5, steps = 8 }
"""


@pytest.fixture
def tiny_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(TINY_SCENARIO)
    return path


def log_text(app: WmtuiApp) -> str:
    return "\n".join(app.query_one("#log").lines)


# -- start screen ---------------------------------------------------------------------------
async def test_start_screen_picks_a_scenario_and_starts_it() -> None:
    chosen: list[Scenario] = []
    fake = FakeSession(training_script(40))

    def chooser(scenario: Scenario) -> tuple[FakeSession, Path]:
        chosen.append(scenario)
        return fake, Path("runs/x")

    app = WmtuiApp(None, refresh=4.0, chooser=chooser)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert type(app.screen).__name__ == "StartScreen"
        assert "GAN" in str(app.screen.query_one("#about").render())  # classic first
        assert not app.check_action("stop", ())  # no session yet: session keys are inert
        await pilot.press("down", "enter")
        await pilot.pause()
        second = next(n for n in preset_names() if n != "classic")  # the list starts at classic
        assert [s.name for s in chosen] == [second] and fake.started
        assert app.scenario is chosen[0] and app.run_path == Path("runs/x")
        assert app.check_action("stop", ())


async def test_start_screen_edits_a_phase_in_place_and_refuses_bad_values() -> None:
    chosen: list[Scenario] = []

    def chooser(scenario: Scenario) -> tuple[FakeSession, Path]:
        chosen.append(scenario)
        return FakeSession(), Path("r")

    app = WmtuiApp(None, refresh=4.0, chooser=chooser)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        await pilot.press("tab")  # to the phase list: classic's first phase is the embed
        await pilot.press("e")
        await pilot.pause()
        form = app.screen
        assert form.query_one("#params-target_label").value == "7"
        form.query_one("#params-target_label").value = "-1"
        await pilot.press("enter")
        await pilot.pause()
        assert "target" in str(form.query_one("#form-error").render())  # refused in place
        form.query_one("#params-target_label").value = "2"
        await pilot.press("enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "StartScreen"
        assert "target label 2" in str(
            app.screen.query_one("#phases").get_option_at_index(0).prompt
        )
        await pilot.press("shift+tab", "enter")
        await pilot.pause()
    assert chosen[0].phases[0].params["target_label"] == 2
    assert chosen[0].phases[0].parsed_params().target_label == 2


async def test_quitting_from_the_start_screen_and_with_a_modal_open_is_quick() -> None:
    app = WmtuiApp(None, refresh=4.0, chooser=lambda s: (FakeSession(), Path("r")))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("q")
        await pilot.pause()
    assert not app.is_running

    fake = FakeSession(training_script(40))
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        app.pump()
        await pilot.press("r")  # the learning-rate prompt is open
        started = time.monotonic()
        await pilot.press("ctrl+q")
    # quit latency with a prompt open: the 2 s promise holds whatever screen is up; the
    # scripted session stops at once, so the margin is all the app's (and a busy machine's)
    assert time.monotonic() - started < 2.0 and fake.stopped


async def test_a_refused_scenario_returns_to_the_start_screen_with_the_reason() -> None:
    from engine.errors import DataError

    def chooser(scenario: Scenario) -> tuple[FakeSession, Path]:
        raise DataError("dataset 'cifar10' not found; run: wmtui data fetch cifar10")

    app = WmtuiApp(None, refresh=4.0, chooser=chooser)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert type(app.screen).__name__ == "StartScreen" and app.session is None
        assert "wmtui data fetch cifar10" in str(app.screen.query_one("#start-message").render())


# -- controls -------------------------------------------------------------------------------
async def test_skip_checkpoint_repaint_rate_theme_and_edit_next_phase() -> None:
    fake = FakeSession(scenario_script()[:5])
    scenario = load_scenario("gan")
    app = WmtuiApp(lambda: fake, refresh=2.0, scenario=scenario)
    async with app.run_test(size=(100, 30)) as pilot:
        app.pump()
        assert "gan 1/3" in str(app.query_one("#title").render())
        await pilot.press("n", "c")
        await pilot.press("f")
        assert app.refresh_hz == 4.0 and "> repaint 4/s" in log_text(app)
        theme = app.theme
        await pilot.press("ctrl+t")
        assert app.theme != theme and app.theme.endswith("light")
        await pilot.press("e")  # the next phase (2: square, an embed) in its form
        await pilot.pause()
        app.screen.query_one("#params-target_label").value = "6"
        await pilot.press("enter")
        await pilot.pause()
        assert "> skip to the next phase" in log_text(app)
    assert fake.sent[:2] == [cmd.SkipPhase(), cmd.Checkpoint()]
    assert isinstance(fake.sent[2], cmd.SetPhaseParams)
    assert fake.sent[2].phase == "square" and fake.sent[2].values["target_label"] == 6


async def test_scans_are_compared_side_by_side_with_the_flag_line() -> None:
    fake = FakeSession(scenario_script(target=4))
    app = WmtuiApp(lambda: fake, refresh=4.0, scenario=load_scenario("gan"))
    async with app.run_test(size=(120, 36)) as pilot:
        app.pump()
        await pilot.pause()
        state = app.state
        assert state.previous_scan_name == "scan-clean" and state.scan_name == "scan-square"
        assert len(state.previous_scan) == 10 and state.scan_outlier() == 4
        line = state.flag_line()
        assert line is not None and state.scan_sizes[4] < line < min(
            v for c, v in state.scan_sizes.items() if c != 4
        )
        bars = app.query_one("#bars")
        kinds = [type(d).__name__ for d in bars._datasets]
        assert kinds.count("BarPlot") == 2  # the clean model's bars beside the watermarked
        assert "scan-clean (grey) vs scan-square" in bars.border_title
        assert "== 2/3 scan-clean: flagged class none" in log_text(app)


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_classic_dashboard_snapshot(snap_compare, size) -> None:
    fake = FakeSession(scenario_script(target=4))

    async def settle(pilot) -> None:
        pilot.app.pump()
        await pilot.pause()

    app = WmtuiApp(lambda: fake, refresh=2.0, scenario=load_scenario("gan"))
    app.theme = "textual-dark"
    assert snap_compare(app, terminal_size=size, run_before=settle)


def test_start_screen_snapshot(snap_compare) -> None:
    app = WmtuiApp(None, refresh=2.0, chooser=lambda s: (FakeSession(), Path("r")))
    app.theme = "textual-dark"
    assert snap_compare(app, terminal_size=(80, 24))


# -- a whole short scenario, live ---------------------------------------------------------------
async def test_a_whole_short_scenario_runs_to_its_summary(tiny_file: Path, tmp_path: Path) -> None:
    scenario = load_scenario(str(tiny_file))
    session, root = scenario_session(scenario, {}, tmp_path / "run")
    app = WmtuiApp(lambda: session, refresh=4.0, run_path=root.path, scenario=scenario)
    async with app.run_test(size=(100, 30)) as pilot:
        for _ in range(300):
            await pilot.pause(0.1)
            if app.state.status in {"completed", "failed"}:
                break
        assert app.state.status == "completed", app.state.error
        assert [r["name"] for r in app.state.phase_results] == ["owner", "thief"]
        assert "== 2/2 thief: acc" in log_text(app)
        assert app.state.summary["phases"][1]["retention_before"]["key"] > 0.5
        assert app.run_path == root.path / "02-thief"  # `a`/`d` now work on the attacked model
        assert "key" in app.state.retention and len(app.state.phase_starts) == 2
    summary = json.loads((root.path / "summary.json").read_text())
    assert summary["phases"][1]["status"] == "completed"


async def test_quit_mid_scan_is_quick_and_leaves_a_valid_run(tmp_path: Path) -> None:
    raw = (
        TINY_SCENARIO.split("[[phases]]")[0]
        + """
[[phases]]
name = "owner"
kind = "train"

[[phases]]
name = "scan"
kind = "detect"
method = "gan"
params = { scan_steps = 100000, images = 200, val_images = 50, batch = 16 }
budget = { data_fraction = 0.5 }
"""
    )
    path = tmp_path / "scan.toml"
    path.write_text(raw)
    scenario = load_scenario(str(path))
    session, root = scenario_session(scenario, {}, tmp_path / "run")
    app = WmtuiApp(lambda: session, refresh=4.0, run_path=root.path, scenario=scenario)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(300):
            await pilot.pause(0.1)
            if app.state.scan_sizes:
                break
        assert app.state.scan_sizes, "the scan never reported"
        started = time.monotonic()
        await pilot.press("ctrl+q")
    # quit latency mid-scan, the 2 s promise: the scan checks Stop between its steps (a
    # fraction of a second each here); the margin is for a busy 2-core machine, while a scan
    # run to its end (100000 steps) would never make it
    assert time.monotonic() - started < 2.0 and not session.running
    summary = json.loads((root.path / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert [p["status"] for p in summary["phases"]] == ["completed", "stopped"]
    events = (root.path / "events.jsonl").read_text().splitlines()
    assert json.loads(events[-1])["event"] == "done"


# -- headless ---------------------------------------------------------------------------------
def test_run_json_streams_the_same_events_and_ends_in_the_summary(tiny_file, tmp_path) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(cli_app, ["run", str(tiny_file), "--json", "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    kinds = {line["event"] for line in lines}
    assert {"phase", "metrics", "log", "done"} <= kinds
    done = lines[-1]
    assert done["event"] == "done" and [p["name"] for p in done["summary"]["phases"]] == [
        "owner",
        "thief",
    ]
    recorded = (out / "events.jsonl").read_text().splitlines()
    assert len(recorded) == len(lines)  # the file holds exactly what was streamed


def test_run_bad_input_is_one_line_and_exit_2(tmp_path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli_app, ["run", "clasic"])
    assert result.exit_code == 2 and "did you mean 'classic'" in result.output
    assert "Traceback" not in result.output
    bad = tmp_path / "bad.toml"
    bad.write_text(
        '[[phases]]\nkind = "embed"\nscheme = "pattern"\nparams = { target_label = 99 }\n'
    )
    result = runner.invoke(cli_app, ["run", str(bad), "--out", str(tmp_path / "run")])
    # the class count is known once the data loads: the phase fails there, in one line
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].endswith("the dataset has 10 classes (0-9)")
    result = runner.invoke(cli_app, ["run", "classic", "--epochs", "0"])
    assert result.exit_code == 2
    listing = runner.invoke(cli_app, ["run", "--list"])
    assert listing.exit_code == 0 and "refit" in listing.output and "classic" in listing.output
