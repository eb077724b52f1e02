"""The dashboard as people read it (issue 12): scan progress with an ETA, the scanned model's
own accuracy, a steady img/s, results in words and percent, and an 80x24 screen where
nothing is cut without a "…" and a retention near 0 stays visible."""

from __future__ import annotations

from pathlib import Path

from engine.events import ClassScan, Metrics, Phase
from tests.wmtui.fakes import FakeSession, classic_script, training_script
from wmtui.tui.app import WmtuiApp
from wmtui.tui.dashboard import Dashboard
from wmtui.tui.state import DashboardState
from wmtui.tui.status import duration, status_line
from wmtui.tui.widgets.event_log import EventLog


def folded(events) -> DashboardState:
    state = DashboardState()
    for event in events:
        state.apply(event)
    return state


def screen_line(widget, y: int = 0) -> str:
    return widget.render_line(y).text


# -- text, from the state ---------------------------------------------------------------------
def test_a_scan_shows_its_steps_and_an_eta_from_the_rate_so_far() -> None:
    """All classes are searched together: "0/10 classes settled" stood still for 450 s."""
    state = folded(classic_script(finished=False))  # step 50 of 300 after 75 s
    line = status_line(state)
    assert line.startswith("RUNNING gan scan step 50/300 · ETA 6m15s")
    assert "classes" not in line
    state.apply(ClassScan("gan", 0, 40.0, False, step=200, steps=300, time=13.0 + 300.0))
    assert "step 200/300 · ETA 2m30s" in status_line(state)


def test_a_scan_shows_the_scanned_models_accuracy_not_the_last_trained_one() -> None:
    state = folded(classic_script(finished=False))
    assert state.acc_series.y[-1] < 86  # the embedding's last reading: 85.10%
    assert "model acc 89.03%" in status_line(state)  # what the scan phase says of its model
    state.apply(Phase("gan", "start", info={"detector": "gan", "steps": 300}))
    assert "model acc -" in status_line(state)  # a model nobody measured: not another's


def test_a_recording_without_steps_still_counts_classes() -> None:
    events = [Phase("gan", "start", info={"detector": "gan", "steps": 300, "classes": 2})]
    events += [ClassScan("gan", c, 1.0 + c, done=True) for c in range(2)]
    assert "gan scan 2/2 classes done" in status_line(folded(events))


def test_images_per_second_is_smoothed_by_interval() -> None:
    """174 -> 10,948 -> 323 within a minute: one short burst must not swing the number."""
    events = [Phase("train", "start", info={"steps": 100}, time=0.0)]
    readings = [(5.0, 174.0), (10.0, 180.0), (10.5, 10_948.0), (15.5, 323.0), (20.5, 300.0)]
    shown = []
    state = folded(events)
    for step, (time, rate) in enumerate(readings, 1):
        state.apply(Metrics("train", step, 0.1, 0.05, 1.0, rate, time=time))
        shown.append(state.images_per_s)
    assert shown[0] == 174.0  # the first reading stands alone
    assert shown[2] < 1_500  # the half-second burst moves it a little
    assert 150 < shown[4] < 1_000
    # scripted readings without times weigh the same: a plain moving average
    plain = folded([Metrics("t", i, 0, 0, 1, r) for i, r in enumerate([100.0, 100.0, 400.0])])
    assert 100 < plain.images_per_s < 400


def test_phase_results_are_written_for_people() -> None:
    state = folded(classic_script())
    lines = state.take_log()
    result = next(line for line in lines if line.startswith("== 2/2 gan"))
    assert (
        result == "== 2/2 gan: flagged class 7 · acc 88.79% (was 89.03%) · key 0.65% (was 99.90%)"
    )
    assert not any("{" in line or "None" in line or "_" in line for line in lines)


def test_durations_read_at_a_glance() -> None:
    assert [duration(s) for s in (4.4, 75, 375, 3_720)] == ["4s", "1m15s", "6m15s", "1h02m"]


# -- the screen -------------------------------------------------------------------------------
async def test_both_apps_compose_one_dashboard_widget(tmp_path: Path) -> None:
    import json

    from engine.events import Log
    from tests.wmtui.test_replay import FakeClock
    from wmtui.tui.replay import ReplaySession
    from wmtui.tui.replay_app import ReplayApp

    (tmp_path / "events.jsonl").write_text(json.dumps(Log("recorded").to_dict()) + "\n")
    app = WmtuiApp(lambda: FakeSession(training_script(40)), refresh=4.0)
    replay = ReplayApp(lambda: ReplaySession(tmp_path, clock=FakeClock()), refresh=4.0)
    for each in (app, replay):
        async with each.run_test(size=(80, 24)):
            board = each.query_one(Dashboard)
            assert each.dashboard is board
            for name in ("title", "status", "acc-plot", "loss-plot", "bars", "log", "preview-0"):
                assert board.query_one(f"#{name}").id == name


async def test_80x24_ends_cut_text_with_an_ellipsis() -> None:
    fake = FakeSession(classic_script(finished=False))
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        app.pump()
        await pilot.pause()
        title = screen_line(app.query_one("#title")).rstrip()
        assert title.endswith("…") and title.lstrip().startswith("wmtui · classic 2/2 · GAN")
        log = app.query_one("#log", EventLog)
        rows = [screen_line(log, y).rstrip() for y in range(log.size.height)]
        cut = [row for row in rows if row.startswith("== 1/2 embed")]
        assert cut == ["== 1/2 embed: acc 89.03% · key 99.90%"]
        log.write_line("x" * 200)
        await pilot.pause()
        rows = [screen_line(log, y).rstrip() for y in range(log.size.height)]
        assert any(row.startswith("xxx") and row.endswith("x…") for row in rows)
        footer = app.screen.query_one("Footer")
        keys = [k for k in footer.query("FooterKey") if k.display]
        assert keys[-1].region.right <= 80 and "question_mark" in [k.key for k in keys]  # all fit


async def test_the_legend_is_in_the_border_and_only_once_there_is_data() -> None:
    """An empty legend box showed at start; a full one hid half the 80x24 plot."""
    fake = FakeSession([])
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        app.pump()
        await pilot.pause()
        acc = app.query_one("#acc-plot")
        assert not acc.query_one("#legend").display and not acc.border_subtitle
        fake.feed(*classic_script()[:6])
        app.pump()
        await pilot.pause()
        assert not acc.query_one("#legend").display
        assert "test acc" in str(acc.border_subtitle) and "key" in str(acc.border_subtitle)


async def test_a_retention_near_zero_is_drawn_above_the_axis() -> None:
    fake = FakeSession(classic_script())
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        app.pump()
        await pilot.pause()
        assert app.state.retention["key"].y[-1] == 0.65
        acc = app.query_one("#acc-plot")
        # 0% lies half a row (two braille dots) or more above the frame's edge, not on it
        _, zero = acc.get_hires_pixel_from_coordinate(0.0, 0.0)
        _, floor = acc.get_hires_pixel_from_coordinate(0.0, acc._y_min)
        assert floor - zero >= 0.5
        canvas = acc.query_one("#plot")
        rows = [screen_line(canvas, y) for y in range(canvas.size.height)]
        axis = max(i for i, row in enumerate(rows) if "━" in row)
        width = len(rows[axis])
        # the end of the run: only the retention line is down there, on the row above the axis
        assert any(0x2801 <= ord(ch) <= 0x28FF for ch in rows[axis - 1][width * 3 // 4 :])


async def test_help_says_a_and_d_work_on_the_current_model() -> None:
    app = WmtuiApp(lambda: FakeSession(training_script(40)), refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        text = str(app.screen.query_one("#help-text").render())
        assert "attack the current model (its latest state)" in text
        assert "scan the current model (its latest state)" in text
        assert "saved model" not in text


async def test_the_start_screen_ends_a_long_description_with_an_ellipsis() -> None:
    app = WmtuiApp(None, refresh=4.0, chooser=lambda s: (FakeSession(), Path("r")))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.pause()
        about = app.screen.query_one("#about")
        rows = [screen_line(about, y).rstrip() for y in range(about.size.height)]
        assert rows[-1].endswith("…") and rows[0].startswith("Embed the TEST watermark")


def test_training_past_its_planned_steps_says_so_and_widens_the_axis() -> None:
    """A data-free injection plans --epochs rounds and goes on until its triggers are learnt:
    the status names the plan instead of a step count beyond it, and the axis follows."""
    state = folded([Phase("embed", "start", info={"steps": 1020, "max_steps": 5100})])
    state.apply(Metrics("embed", 1000, 58.8, 0.001, 1.0, 1500.0, 0.89, {"key": 0.9}))
    assert "step 1000/1020 " in status_line(state) and state.x_upper == 1020
    state.apply(Metrics("embed", 1500, 88.2, 0.001, 1.0, 1500.0, 0.89, {"key": 0.97}))
    assert "step 1500 (planned 1020) " in status_line(state) and state.x_upper == 1500
