"""Replay: a recorded events.jsonl played on an injected clock, in the session and the app."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine import commands as cmd
from engine.errors import RunError
from engine.events import (
    ClassScan,
    Done,
    Event,
    Log,
    Metrics,
    Phase,
    TriggerPreview,
)
from engine.runs import EventLog
from wmtui.cli import app as cli_app
from wmtui.tui.replay import ReplaySession, Seek, SetSpeed, timeline
from wmtui.tui.replay_app import ReplayApp

runner = CliRunner()


class FakeClock:
    """Stands in for time.monotonic: tests move time instead of sleeping."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def recorded_events() -> list[Event]:
    """A 16 s run: training with evaluations and retention, a scan, previews, Done."""
    events: list[Event] = [
        Log("dataset: synthetic (asked for)", time=0.0),
        Phase(
            "train",
            "start",
            info={"dataset": "synthetic", "model": "lenet5", "device": "cuda", "steps": 100},
            time=0.5,
        ),
    ]
    for i in range(1, 11):
        step = 10 * i
        events.append(
            Metrics(
                phase="train",
                step=step,
                epoch=step / 50,
                lr=0.05,
                loss=2.3 / i,
                images_per_s=9000.0,
                test_acc=0.1 * i if i % 2 == 0 else None,
                retention={"key": 0.09 * i} if i % 2 == 0 else {},
                time=float(i),
            )
        )
    events += [
        Phase("train", "end", time=11.0),
        Phase("gan-scan", "start", info={"threshold": 2.0, "classes": 4}, time=12.0),
    ]
    events += [
        ClassScan("gan-scan", c, 0.5 if c == 2 else 3.0 + c, done=True, time=12.5 + 0.25 * c)
        for c in range(4)
    ]
    square = torch.zeros(1, 8, 8, dtype=torch.uint8)
    square[0, 5:, 5:] = 255
    for name in ("true trigger", "reversed"):
        preview = TriggerPreview.from_tensor(name, square)
        preview.time = 14.0
        events.append(preview)
    events += [
        Phase("gan-scan", "end", info={"flagged_class": 2}, time=15.0),
        Done("completed", {"test_acc": 1.0}, time=16.0),
    ]
    return events


def write_run(folder: Path, events: list[Event] | None = None) -> Path:
    """A run directory with only what replay reads, written by the real event sink."""
    folder.mkdir(parents=True, exist_ok=True)
    sink = EventLog(folder)
    for event in recorded_events() if events is None else events:
        sink(event)
    sink.close()
    return folder


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "run")


def started(run: Path, speed: float = 1.0) -> tuple[ReplaySession, FakeClock]:
    clock = FakeClock()
    return ReplaySession(run, speed, clock=clock).start(), clock


# -- the session ----------------------------------------------------------------------------
def test_events_come_out_in_time_order_as_the_clock_moves(run: Path) -> None:
    session, clock = started(run)
    first = session.poll()
    assert [type(e) for e in first] == [Log]  # only t=0 is due
    clock.advance(5.0)
    upto5 = session.poll()
    assert [e.time for e in upto5] == [0.5, 1.0, 2.0, 3.0, 4.0, 5.0]
    clock.advance(100.0)
    rest = session.poll()
    times = [e.time for e in first + upto5 + rest if not isinstance(e, Log)]
    assert times == sorted(times)
    assert isinstance(rest[-2], Done) and rest[-1].message.startswith("replay finished")
    assert session.poll() == [] and session.position == session.duration == 16.0


def test_speed_scales_the_clock_without_jumping(run: Path) -> None:
    session, clock = started(run, speed=4.0)
    clock.advance(1.0)
    assert session.position == 4.0
    assert max(e.time for e in session.poll()) == 4.0
    session.send(SetSpeed(16.0))
    assert session.position == 4.0  # a speed change never skips events
    clock.advance(0.5)
    assert session.position == 12.0
    acks = [e.message for e in session.poll() if isinstance(e, Log)]
    assert "replay speed ×16" in acks
    assert session.status_line() == "REPLAY ×16 t=12.0/16.0 s"


def test_pause_stops_the_clock_and_is_acknowledged(run: Path) -> None:
    session, clock = started(run)
    clock.advance(3.0)
    session.poll()
    session.send(cmd.Pause())
    assert [e.message for e in session.poll()] == ["paused"]
    clock.advance(60.0)
    assert session.poll() == [] and session.position == 3.0
    assert session.status_line().endswith("paused")
    session.send(cmd.Resume())
    clock.advance(1.0)
    out = session.poll()
    assert [e.time for e in out if isinstance(e, Metrics)] == [4.0]
    assert out[-1] == Log("resumed")


def test_seek_back_asks_for_a_rebuild_and_replays_up_to_the_position(run: Path) -> None:
    session, clock = started(run)
    clock.advance(12.0)
    session.poll()
    assert not session.take_reset()
    session.send(Seek(-10.0))
    assert session.take_reset() and not session.take_reset()  # once
    replayed = session.poll()
    assert [e.time for e in replayed[:-1]] == [0.0, 0.5, 1.0, 2.0]
    assert replayed[-1].message == "seek -10 s -> t=2.0 s"
    clock.advance(1.0)
    assert [e.time for e in session.poll()] == [3.0]


def test_seek_forward_releases_and_clamps_at_the_end(run: Path) -> None:
    session, _ = started(run)
    session.poll()
    session.send(Seek(10.0))
    assert not session.take_reset()
    assert max(e.time for e in session.poll()) == 10.0
    session.send(Seek(1000.0))
    out = session.poll()
    assert session.finished and session.position == 16.0 and any(isinstance(e, Done) for e in out)
    session.send(Seek(-1000.0))
    assert session.take_reset() and session.position == 0.0


def test_long_idle_gaps_are_compressed_and_appended_recordings_continue() -> None:
    times = [0.0, 1.0, 61.0, 62.0, 0.5, 2.5]  # a 60 s pause, then `resume` restarting the clock
    events: list[Event] = [Log(str(t), time=t) for t in times]
    assert timeline(events, max_gap=5.0) == [0.0, 1.0, 6.0, 7.0, 7.5, 9.5]


def test_stop_is_immediate_and_other_commands_are_refused(run: Path) -> None:
    session, _ = started(run)
    session.send(cmd.SetLR(0.1))
    out = session.poll()
    assert out[-1].level == "warning" and "not available in replay" in out[-1].message
    started_at = time.monotonic()
    assert session.stop() is True
    # stop latency: a replay has no worker thread, stop only sets a flag (microseconds);
    # 0.1 s leaves room for a descheduled test process, and stays far below the 2 s promise
    assert time.monotonic() - started_at < 0.1 and session.poll() == []


def test_torn_last_line_is_skipped_with_a_warning(run: Path) -> None:
    with (run / "events.jsonl").open("a") as handle:
        handle.write('{"event": "metrics", "phase": "tr')  # crashed mid-write
    session, clock = started(run)
    first = session.poll()
    assert first[0].level == "warning" and "torn last line" in first[0].message
    clock.advance(100.0)
    assert isinstance(session.poll()[-2], Done)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("", "holds no events"),
        ("\n\n", "holds no events"),
        ('{"event": "log", "mess', "holds no events"),  # only a torn line
        (
            '{"event": "log", "message": "a"}\nnot json\n{"event": "done", "status": "x"}\n',
            "line 2",
        ),
        ('[1, 2]\n{"event": "done", "status": "x"}\n', "not a JSON object"),
        ('{"event": "nope"}\n{"event": "done", "status": "x"}\n', "unknown event kind"),
        ('{"event": "log"}\n{"event": "done", "status": "x"}\n', "line 1 is corrupt"),
    ],
)
def test_bad_recordings_are_one_clear_error(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "events.jsonl").write_text(content)
    with pytest.raises(RunError, match=fragment) as info:
        ReplaySession(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_run_or_file_is_a_run_error(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="run directory not found"):
        ReplaySession(tmp_path / "nowhere")
    with pytest.raises(RunError, match=r"has no events\.jsonl"):
        ReplaySession(tmp_path)


def test_the_jsonl_file_itself_can_be_given(run: Path) -> None:
    assert ReplaySession(run / "events.jsonl").duration == 16.0


# -- the app --------------------------------------------------------------------------------
def replay_app(run: Path, speed: float = 1.0) -> tuple[ReplayApp, ReplaySession, FakeClock]:
    clock = FakeClock()
    session = ReplaySession(run, speed, clock=clock)
    return ReplayApp(lambda: session, refresh=4.0), session, clock


def title(app: ReplayApp) -> str:
    return str(app.query_one("#title").render())


def log_text(app: ReplayApp) -> str:
    return "\n".join(app.query_one("#log").lines)


async def test_app_plots_the_recording_and_shows_the_replay_clock(run: Path) -> None:
    app, _, clock = replay_app(run)
    async with app.run_test(size=(100, 30)) as pilot:
        clock.advance(6.0)
        app.pump()
        await pilot.pause()
        plot = app.query_one("#acc-plot")
        assert len(plot._datasets[0].x) == 3  # evaluations at t=2, 4, 6
        assert title(app).startswith("REPLAY ×1 t=6.0/16.0 s · wmtui · train")
        assert app.state.status == "running"
        clock.advance(100.0)
        app.pump()
        await pilot.pause()
        assert app.state.status == "completed" and app.is_running  # stays on the last screen
        assert app.dashboard.has_class("scanning") and app.state.scan_outlier() == 2
        assert "replay finished" in log_text(app)
        assert title(app).startswith("REPLAY ×1 t=16.0/16.0 s end")


async def test_speed_pause_and_seek_keys(run: Path) -> None:
    app, session, clock = replay_app(run)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        clock.advance(2.0)
        app.pump()
        assert title(app).startswith("REPLAY ×4 t=8.0/16.0 s")
        await pilot.press("6")
        app.pump()
        assert "REPLAY ×16" in title(app)
        await pilot.press("space")
        app.pump()
        assert session.paused and "paused" in title(app)
        assert app.state.status == "paused"
        before = len(app.state.loss_series.x)
        await pilot.press("left")
        app.pump()
        assert len(app.state.loss_series.x) < before  # rebuilt from the start
        assert session.position == 0.0 and "t=0.0/16.0 s" in title(app)
        await pilot.press("right_square_bracket", "space")
        app.pump()
        assert not session.paused and len(app.state.loss_series.x) == 10
        assert "seek +10 s -> t=10.0 s" in log_text(app)
        await pilot.press("1")
        app.pump()
        assert "REPLAY ×1" in title(app)


async def test_live_only_controls_are_refused_with_a_log_line(run: Path) -> None:
    app, session, _ = replay_app(run)
    async with app.run_test(size=(100, 30)) as pilot:
        app.pump()
        await pilot.press("plus", "minus", "r", "t", "l", "a", "d", "s")
        await pilot.pause()
        refusals = [line for line in app.query_one("#log").lines if "not available" in line]
        assert len(refusals) == 8 and all(r.startswith("! ") for r in refusals)
        assert app.screen is app.screen_stack[0]  # no prompt or picker opened
        shown = [b.action for _, b, _, _ in app.active_bindings.values() if b.show]
        assert list(dict.fromkeys(shown)) == [
            "toggle_pause",
            "speed(1)",
            "speed(4)",
            "speed(16)",
            "seek(-10)",
            "seek(10)",
            "quit",
        ]
        await pilot.press("question_mark")
        await pilot.pause()
        assert "replay speed" in str(app.screen.query_one("#help-text").render())
        assert app.is_running and not session.stopped


async def test_a_screenshot_goes_to_the_working_directory_not_a_recorded_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded = tmp_path / "elsewhere" / "01-embed"  # a scenario phase's folder, with a model
    recorded.mkdir(parents=True)
    (recorded / "model.safetensors").write_bytes(b"")
    end = Phase(
        "embed",
        "end",
        info={"scenario": "classic", "run": str(recorded), "status": "completed"},
        index=1,
        total=2,
        time=16.5,
    )
    run = write_run(tmp_path / "run", [*recorded_events(), end])
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    app, _, clock = replay_app(run, speed=16.0)
    async with app.run_test(size=(100, 30)) as pilot:
        clock.advance(100.0)
        app.pump()
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert app.run_path is None
    assert list(here.glob("*.svg")) and not list(recorded.glob("*.svg"))


async def test_ctrl_q_quits_mid_replay_at_once(run: Path) -> None:
    app, session, clock = replay_app(run)
    async with app.run_test(size=(80, 24)) as pilot:
        clock.advance(5.0)
        app.pump()
        started_at = time.monotonic()
        await pilot.press("ctrl+q")
    # quit latency, the product's 2 s promise: nothing to wait for but the app's own exit
    # (well under a second); the margin is for a busy 2-core machine
    assert time.monotonic() - started_at < 2.0
    assert session.stopped and "quit at t=5.0/16.0 s" in app.exit_message


def test_replay_snapshot(snap_compare, run: Path) -> None:
    """The final screen of a replay: scan bars, the flagged class, the replay clock."""
    app, _, clock = replay_app(run, speed=4.0)
    app.theme = "textual-dark"

    async def settle(pilot) -> None:
        clock.advance(100.0)
        pilot.app.pump()
        await pilot.pause()

    assert snap_compare(app, terminal_size=(100, 30), run_before=settle)


# -- the command ----------------------------------------------------------------------------
def test_replay_command_refuses_a_missing_run_in_one_line(tmp_path: Path) -> None:
    result = runner.invoke(cli_app, ["replay", str(tmp_path / "missing")])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error: run directory not found")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [(["--speed", "3"], "--speed must be one of 1, 4, 16"), (["--refresh", "0"], "--refresh")],
)
def test_replay_command_checks_its_options(run: Path, args: list[str], fragment: str) -> None:
    result = runner.invoke(cli_app, ["replay", str(run), *args])
    assert result.exit_code == 2 and fragment in result.stderr


def test_replay_of_a_run_file_that_is_not_a_recording_says_what_replay_takes(run: Path) -> None:
    (run / "summary.json").write_text('{\n  "status": "completed"\n}\n')
    result = runner.invoke(cli_app, ["replay", str(run / "summary.json")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "corrupt" not in lines[0]
    assert "replay takes a run folder or its events.jsonl, not summary.json" in lines[0]
    assert f"(try: wmtui replay {run})" in lines[0]
