"""The data-free scheme's distillation as people watch it: the teacher-student discrepancy per
epoch, its second difference, the threshold Delta0/10 and the epoch the truncation rule
stopped at, in the state, on the dashboard (live and replayed) and in headless output."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from engine.events import ClassScan, Discrepancy, Done, Event, Log, Metrics, Phase
from tests.wmtui.fakes import FakeSession
from tests.wmtui.test_replay import FakeClock, write_run
from wmtui.cli.headless import HeadlessReporter, discrepancy_line
from wmtui.tui.app import WmtuiApp
from wmtui.tui.dashboard import DISC_STYLES, Dashboard, SymlogAxis
from wmtui.tui.replay import ReplaySession, Seek, parse_line
from wmtui.tui.replay_app import ReplayApp
from wmtui.tui.state import DashboardState

EPOCHS, T0 = 40, 5


def discrepancies(
    epochs: int = EPOCHS, t0: int = T0, start: float = 1.0, bump: int | None = None
) -> list[Discrepancy]:
    """A distillation as the engine reports it (engine/watermarks/dfad.py): D falls fast then
    slowly; Delta0 is the largest second difference of epochs 3..t0, the threshold Delta0/10
    from epoch 3 on; from epoch t0+1 the first epoch whose second difference is at most the
    threshold stops the run. ``bump`` raises that epoch's D: the next one's second
    difference goes negative, under the threshold: a noisy curve stops early."""
    values = [0.05 + 2.0 * 0.6**t + (0.03 if t == bump else 0.0) for t in range(1, epochs + 1)]
    events, delta0 = [], None
    for t in range(1, epochs + 1):
        second = values[t - 1] - 2 * values[t - 2] + values[t - 3] if t >= 3 else None
        stop = False
        if second is not None and t <= max(t0, 3):
            delta0 = second if delta0 is None else max(delta0, second)
        elif second is not None:
            stop = second <= delta0 / 10
        threshold = None if delta0 is None else delta0 / 10
        events.append(
            Discrepancy(
                "distill", t, epochs, values[t - 1], second, threshold, stop, time=start + t / 10
            )
        )
        if stop:
            break
    return events


def distill_script(*, injection: bool = True, bump: int | None = None) -> list[Event]:
    """Distill (truncated at epoch 8 of 40), with the engine's Metrics each epoch (the
    discrepancy as the loss, no accuracy), then inject the watermark in an ``embed`` phase:
    fidelity and trigger accuracy as ordinary metrics."""
    events: list[Event] = [
        Phase("distill", "start", info={"scheme": "datafree", "epochs": EPOCHS, "t0": T0}, time=0.5)
    ]
    for event in discrepancies(bump=bump):
        events += [event, Metrics("distill", 50 * event.epoch, event.epoch, 0.01, event.value, 9e3)]
        events[-1].time = event.time
    last = events[-2]
    assert isinstance(last, Discrepancy)
    events += [
        Log(f"distillation truncated at epoch {last.epoch} of {EPOCHS}", time=last.time),
        Phase("distill", "end", info={"truncated_at": last.epoch}, time=last.time + 0.1),
    ]
    if injection:
        at = last.time + 0.5
        events.append(Phase("embed", "start", info={"scheme": "datafree", "steps": 100}, time=at))
        events += [
            Metrics(
                "embed",
                20 * i,
                i / 5,
                0.01,
                1.0 / i,
                1000.0,
                test_acc=0.8 + 0.01 * i,
                retention={"key": 0.19 * i},
                time=at + i,
            )
            for i in range(1, 6)
        ]
        events.append(Phase("embed", "end", time=at + 6))
    return events


def folded(events: list[Event]) -> DashboardState:
    state = DashboardState()
    for event in events:
        state.apply(event)
    return state


# -- the state --------------------------------------------------------------------------------
def test_the_state_keeps_the_discrepancy_its_second_difference_threshold_and_truncation() -> None:
    found = discrepancies()
    state = folded([Phase("distill", "start", info={"epochs": EPOCHS}), *found[:2]])
    assert state.discrepancy.x == [1, 2] and state.discrepancy.y[0] == found[0].value
    assert not state.second_diff.x and state.disc_threshold is None  # none before epoch 3
    for event in found[2:4]:
        state.apply(event)
    assert state.second_diff.x == [3, 4] and state.truncated_at is None
    assert state.disc_threshold == found[3].threshold  # the latest (Delta0 may grow to t0)
    assert (state.disc_epoch, state.disc_epochs, state.phase) == (4, EPOCHS, "distill")
    for event in found[4:]:
        state.apply(event)
    assert state.disc_threshold == pytest.approx(found[T0 - 1].threshold)
    assert state.truncated_at == found[-1].epoch == 8
    assert len(state.discrepancy.x) == 8 and len(state.second_diff.x) == 6


def test_the_distillation_stays_through_the_injection_and_goes_with_the_next_job() -> None:
    state = folded(distill_script())
    assert state.truncated_at == 8 and state.acc_series.y[-1] == pytest.approx(85.0)
    assert state.disc_stale  # the injection ended: the next phase is another job's
    state.apply(Phase("ft-basic", "start", info={"steps": 50}))
    assert not state.discrepancy.x and state.truncated_at is None
    assert state.disc_threshold is None and not state.second_diff.x


@pytest.mark.parametrize(
    "then",
    [
        [Phase("distill", "start")],  # a new distillation (or the distill attack)
        [Phase("gan", "start", info={"detector": "gan", "steps": 300})],  # a scan
        [Phase("square", "start", index=2, total=2, info={"scenario": "datafree"})],
        [Phase("distill", "end"), Phase("embed", "end"), Phase("embed", "start")],
        discrepancies()[:1],  # epoch 1 again: another distillation, recorded without a start
    ],
    ids=["distill", "scan", "scenario-phase", "job-ended", "epochs-restart"],
)
def test_a_distillation_is_forgotten_when_another_job_begins(then: list[Event]) -> None:
    state = folded([Phase("distill", "start"), *discrepancies()])
    for event in then:
        state.apply(event)
    assert state.truncated_at is None and state.disc_threshold is None
    assert len(state.discrepancy.x) == (1 if isinstance(then[0], Discrepancy) else 0)


# -- the dashboard ------------------------------------------------------------------------------
def screen_rows(app) -> list[str]:
    """The whole screen as painted, borders included (a widget's own render_line has no
    border): what a person reads."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


def border_rows(app, selector: str) -> tuple[str, str]:
    """The top and bottom border rows of a widget, as painted."""
    region = app.query_one(selector).region
    rows = screen_rows(app)
    return (
        rows[region.y][region.x : region.right],
        rows[region.bottom - 1][region.x : region.right],
    )


def column_cells(plot, epoch: float) -> list[tuple[str, str]]:
    """The plot canvas's cells in the column of ``epoch``, inside the frame: (char, colour)."""
    canvas = plot.query_one("#plot")
    x, _ = plot.get_pixel_from_coordinate(epoch, 0)
    cells = []
    for y in range(1, canvas.size.height - 1):
        column = 0
        for segment in canvas.render_line(y):
            if column <= x < column + len(segment.text):
                color = segment.style.color.name if segment.style and segment.style.color else ""
                cells.append((segment.text[x - column], color))
                break
            column += len(segment.text)
    return cells


def is_braille(char: str) -> bool:
    return 0x2801 <= ord(char) <= 0x28FF


def assert_marker_at(plot, epoch: int) -> None:
    """A red line of dots down the plot at ``epoch``, the data drawn over it where they cross
    (the truncated epoch's own point stays visible); no red anywhere else."""
    cells = column_cells(plot, epoch)
    assert all(is_braille(char) for char, _ in cells), cells
    red = [colour for _, colour in cells if colour == DISC_STYLES["stop"]]
    assert len(red) >= len(cells) // 2 and len(red) < len(cells), cells  # data cross it
    width = plot.query_one("#plot").size.width
    for other in (epoch - 4, epoch - 2, epoch + 2):
        if 0 < plot.get_pixel_from_coordinate(other, 0)[0] < width - 1:
            assert DISC_STYLES["stop"] not in [colour for _, colour in column_cells(plot, other)]


def colour_cells(plot, colour: str) -> list[int]:
    """How many cells of each canvas row are drawn in ``colour``."""
    canvas = plot.query_one("#plot")
    return [
        sum(
            len(s.text)
            for s in canvas.render_line(y)
            if s.style and s.style.color and s.style.color.name == colour
        )
        for y in range(canvas.size.height)
    ]


def tick_labels(plot) -> tuple[list[str], list[str]]:
    """The y axis's labels top to bottom, the x axis's left to right."""
    left = plot.query_one("#margin-left")
    ys = [left.render_line(y).text.strip() for y in range(left.size.height)]
    return [y for y in ys if y], plot.query_one("#margin-bottom").render_line(0).text.split()


async def settle(app, pilot) -> None:
    app.pump()
    await pilot.pause()
    await pilot.pause()  # the plot's resize (its width, once shown) repaints its ticks


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_discrepancy_takes_the_loss_plots_place_with_its_legend_and_marker(
    size: tuple[int, int],
) -> None:
    script = distill_script(injection=False)
    fake = FakeSession(script[:5])  # epochs 1 and 2: no second difference, no threshold yet
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        board = app.query_one(Dashboard)
        disc = app.query_one("#disc-plot")
        assert board.has_class("discrepancy") and disc.display
        assert not app.query_one("#loss-plot").display and not app.query_one("#scan").display
        assert not app.query_one("#acc-plot").display  # nothing evaluated: no empty plot
        assert disc.region.width == size[0]
        top, bottom = border_rows(app, "#disc-plot")
        assert "epoch 2/40 · D 0.77" in top and "stopped" not in top
        assert bottom.count("━ ") == 1 and "━ discrepancy " in bottom
        assert tick_labels(disc)[1] == ["0", "10", "20", "30", "40"]  # the planned epochs

        fake.feed(*script[5:])
        await settle(app, pilot)
        top, bottom = border_rows(app, "#disc-plot")
        assert "stopped at epoch 8/40 · D 0.0836" in top
        assert "━ discrepancy  ━ 2nd diff  ━ Δ0/10" in bottom and "…" not in bottom
        assert_marker_at(disc, 8)
        # the threshold's line crosses the plot; the second difference (0.19 -> 0.015) and
        # the discrepancy (1.25 -> 0.084) are both drawn well above the floor
        assert max(colour_cells(disc, "magenta")) >= disc.query_one("#plot").size.width // 2
        cyan, yellow = colour_cells(disc, "cyan"), colour_cells(disc, "yellow")
        assert sum(cyan) >= 5 and sum(yellow) >= 5
        assert cyan[-2] == yellow[-2] == 0  # the row above the axis: not squashed onto it
        ys, xs = tick_labels(disc)
        assert ys[:3] == ["1", "0.1", "0.01"] and ys[-1] == "0"
        assert xs == ["0", "2", "4", "6", "8", "10"]  # stopped: the epochs it ran, and a margin


async def test_at_80x24_the_injections_accuracy_joins_it_and_the_legend_still_fits() -> None:
    script = distill_script()
    injection = next(i for i, e in enumerate(script) if isinstance(e, Phase) and e.name == "embed")
    fake = FakeSession(script[:injection])
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        acc, disc = app.query_one("#acc-plot"), app.query_one("#disc-plot")
        assert not acc.display and disc.region.width == 80
        assert "━ discrepancy  ━ 2nd diff  ━ Δ0/10" in border_rows(app, "#disc-plot")[1]
        assert tick_labels(disc)[1] == ["0", "2", "4", "6", "8", "10"]
        # the first evaluation: the accuracy plot takes half the width, with no new
        # discrepancy to repaint the plot; its legend and ticks follow its width
        fake.feed(*script[injection:])
        await settle(app, pilot)
        assert acc.display and disc.display and not app.query_one("#loss-plot").display
        assert disc.region.width == 40
        top, bottom = border_rows(app, "#disc-plot")
        assert "stopped at epoch 8/40 · D 0.0836" in top
        assert "━ D  ━ 2nd diff  ━ Δ0/10" in bottom and "…" not in bottom
        _, acc_bottom = border_rows(app, "#acc-plot")
        assert "━ test acc  ━ key" in acc_bottom
        assert tick_labels(disc)[1] == ["0", "5", "10"]  # narrower: fewer x ticks
        assert_marker_at(disc, 8)


async def test_a_negative_second_difference_that_truncates_is_drawn_below_zero() -> None:
    """The rule is signed: a bump in the curve sends the next second difference below 0,
    under the threshold, and the run stops there; the plot shows it below the 0 tick."""
    script = distill_script(injection=False, bump=6)
    stopped = [e for e in script if isinstance(e, Discrepancy)][-1]
    assert stopped.epoch == 7 and stopped.second_diff < 0 and stopped.truncated
    app = WmtuiApp(lambda: FakeSession(script), refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        disc = app.query_one("#disc-plot")
        ys, _ = tick_labels(disc)
        assert "0" in ys and ys[-1].startswith("-")
        _, zero = disc.get_pixel_from_coordinate(0, disc._y_formatter.to_axis(0.0))
        _, low = disc.get_pixel_from_coordinate(7, disc._y_formatter.to_axis(stopped.second_diff))
        assert low > zero  # rows count down: below the 0 line
        assert_marker_at(disc, 7)


async def test_a_distill_attack_or_a_scan_brings_back_what_it_replaced() -> None:
    fake = FakeSession(distill_script())
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        fake.feed(Phase("distill", "start", info={"steps": 50}))  # the attack: no discrepancy
        fake.feed(Metrics("distill", 10, 0.1, 0.01, 0.7, 500.0))
        await settle(app, pilot)
        board = app.query_one(Dashboard)
        assert not board.has_class("discrepancy") and app.query_one("#loss-plot").display
        assert not app.query_one("#disc-plot").display
        fake.feed(Phase("distill", "end"), Phase("distill", "start"), *discrepancies()[:3])
        await settle(app, pilot)
        assert board.has_class("discrepancy")
        fake.feed(Phase("nc", "start", info={"detector": "nc", "steps": 10}))
        fake.feed(*[ClassScan("nc", c, 1.0 + c, True, 10, 10) for c in range(3)])
        await settle(app, pilot)
        assert board.has_class("scanning") and not board.has_class("discrepancy")
        assert app.query_one("#bars").display and not app.query_one("#disc-plot").display


def test_the_symlog_axis_is_linear_near_zero_and_labelled_in_data_units() -> None:
    axis = SymlogAxis(0.001)
    assert axis.to_axis(0.0) == 0.0 and axis.to_axis(-0.001) == -axis.to_axis(0.001)
    assert axis.from_axis(axis.to_axis(0.0192)) == pytest.approx(0.0192)
    ticks = axis.get_ticks(axis.to_axis(-0.01), axis.to_axis(2.0))
    assert axis.get_labels_for_ticks(ticks) == ["-0.01", "0", "0.01", "1"]  # five at most
    assert len(axis.get_ticks(-0.5, 5.0)) <= 5


# -- replay -------------------------------------------------------------------------------------
async def test_a_recorded_distillation_replays_and_rebuilds_after_a_seek(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", [*distill_script(), Done("completed", time=20.0)])
    lines = (run / "events.jsonl").read_text().splitlines()
    recorded = [parse_line(line) for line in lines if '"discrepancy"' in line]
    assert recorded == discrepancies()  # the sink writes what replay reads back
    clock = FakeClock()
    session = ReplaySession(run, 1.0, clock=clock)
    app = ReplayApp(lambda: session, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        clock.advance(1.55)  # epochs 1-5 (t = 1.1 .. 1.5)
        await settle(app, pilot)
        assert app.state.discrepancy.x == [1, 2, 3, 4, 5] and app.state.truncated_at is None
        assert app.dashboard.has_class("discrepancy")
        clock.advance(30.0)
        await settle(app, pilot)
        assert app.state.truncated_at == 8 and app.state.status == "completed"
        top, _ = border_rows(app, "#disc-plot")
        assert "stopped at epoch 8/40" in top  # the final screen keeps it
        session.send(Seek(-1000.0))
        await settle(app, pilot)
        assert not app.dashboard.has_class("discrepancy")  # rebuilt from t=0: nothing yet
        assert not app.state.discrepancy.x and app.query_one("#loss-plot").display


# -- headless -----------------------------------------------------------------------------------
def test_the_headless_line_says_the_epoch_the_numbers_and_marks_the_truncation() -> None:
    found = discrepancies()
    assert discrepancy_line(found[0]) == "distill epoch 1/40  discrepancy 1.25  2nd diff -"
    assert discrepancy_line(found[6]) == (
        "distill epoch 7/40  discrepancy 0.106  2nd diff 0.02488  (threshold 0.0192)"
    )
    assert discrepancy_line(found[7]) == (
        "distill epoch 8/40  discrepancy 0.08359  2nd diff 0.01493  (threshold 0.0192)"
        "  <- truncated here: distillation stopped"
    )


def test_headless_prints_the_telling_epochs_and_json_prints_every_one() -> None:
    out, err = io.StringIO(), io.StringIO()
    reporter = HeadlessReporter(json_mode=True, out=out, err=err, interval=3600.0)
    for event in distill_script(injection=False):
        reporter(event)
    said = [line for line in err.getvalue().splitlines() if "discrepancy" in line]
    # the first epoch, the first with a threshold (epoch 3) and the truncated one
    assert [line.split()[2] for line in said] == ["1/40", "3/40", "8/40"]
    assert said[-1].endswith("<- truncated here: distillation stopped")
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    kinds = [r for r in records if r["event"] == "discrepancy"]
    assert len(kinds) == 8 and kinds[0]["second_diff"] is None and kinds[0]["threshold"] is None
    assert kinds[-1]["truncated"] is True and kinds[-1]["epochs"] == EPOCHS
    assert parse_line(json.dumps(kinds[-1])) == discrepancies()[-1]
    every = io.StringIO()
    plain = HeadlessReporter(err=every, interval=0.0)
    for event in discrepancies():
        plain(event)
    assert len(every.getvalue().splitlines()) == 8  # one a line an epoch when time allows
