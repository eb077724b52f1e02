"""Two piracy attacks side by side (Li et al., Fig. 4): the ``piracy`` scenario's attack on a
dual model beside the same attack on a pattern model, each over its own steps from 0, with
test accuracy, the owner's mark and the pirate's; in the state, on the dashboard at 80x24 and
120x40, and in replay. The events mimic a real run (engine/studies/scenarios.py, referee.py and
piracy.py: job phase "piracy" with info["attack"], the pirate's probes "pirate null"/"pirate
true" or "pirate")."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.events import ClassScan, Done, Event, Log, Metrics, Phase
from tests.wmtui.fakes import FakeSession
from tests.wmtui.test_discrepancy_view import border_rows, settle, tick_labels
from tests.wmtui.test_replay import FakeClock, write_run
from wmtui.tui.app import WmtuiApp
from wmtui.tui.dashboard import Dashboard
from wmtui.tui.replay import ReplaySession, Seek
from wmtui.tui.replay_app import ReplayApp
from wmtui.tui.state import DashboardState
from wmtui.tui.widgets.comparison_plot import GAP, LINES

EMBED_STEPS, ATTACK_STEPS, EVERY = 100, 40, 10
ROOT = "runs/piracy"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def scenario_phase(name: str, status: str, index: int, kind: str, plugin: str, t: float) -> Phase:
    info = {"scenario": "piracy", "title": name, "kind": kind, "plugin": plugin}
    info["run"] = f"{ROOT}/0{index}-{name}"
    return Phase(name, status, index=index, total=4, info=info, time=t)


def embed(name: str, index: int, scheme: str, keys: dict[str, float], clock: Clock) -> list[Event]:
    run = f"{ROOT}/0{index}-{name}"
    events: list[Event] = [
        scenario_phase(name, "start", index, "embed", scheme, clock()),
        Phase(
            "embed",
            "start",
            info={"scheme": scheme, "steps": EMBED_STEPS, "run": run},
            time=clock(),
        ),
    ]
    for step in range(EVERY, EMBED_STEPS + 1, EVERY):
        share = step / EMBED_STEPS
        retention = {k: v * share for k, v in keys.items()}
        events.append(
            Metrics(
                "embed",
                step,
                share,
                0.01,
                1 - share / 2,
                900.0,
                0.5 + 0.35 * share,
                retention,
                time=clock(),
            )
        )
    final = {"test_acc": 0.85, "retention": keys}
    events += [
        Phase("embed", "end", info=final, time=clock()),
        scenario_phase(name, "end", index, "embed", scheme, clock()),
    ]
    return events


def piracy(name: str, index: int, source: str, dual: bool, clock: Clock) -> list[Event]:
    """The pirate's attack: on a dual model test accuracy and the owner's null mark fall and
    the pirate's null mark stays at chance; on a pattern model the pirate's mark rises and
    test accuracy holds."""
    info = {"test_acc": 0.85, "attack": "piracy", "data_fraction": 0.0834, "steps": ATTACK_STEPS}
    info |= {"source_run": f"{ROOT}/{source}", "dataset": "synthetic", "labeled_images": 5004}
    events: list[Event] = [
        scenario_phase(name, "start", index, "attack", "piracy", clock()),
        Phase("piracy", "start", info=info, time=clock()),
    ]
    for step in range(1, ATTACK_STEPS + 1):
        share = step / ATTACK_STEPS
        test_acc, retention = None, {}
        if step % EVERY == 0:  # evaluated each epoch, as the referee does
            if dual:
                test_acc = 0.85 - 0.6 * share
                retention = {"key null": 0.84 - 0.7 * share, "key true": 1.0}
                retention |= {"pirate null": 0.1, "pirate true": 0.2 + 0.5 * share}
            else:
                test_acc = 0.86
                retention = {"key": 0.99, "pirate": 0.3 + 0.65 * share}
        events.append(
            Metrics(
                "piracy", step, share * 10, 0.001, 1.0, 5000.0, test_acc, retention, time=clock(0.1)
            )
        )
    verdict = "not verified" if dual else "VERIFIED"
    events += [
        Log(f"the pirate's claim 1: {verdict} (chance 1/10)", time=clock()),
        Phase("piracy", "end", info={"test_acc": test_acc}, time=clock()),
        scenario_phase(name, "end", index, "attack", "piracy", clock()),
    ]
    return events


def piracy_script() -> list[Event]:
    """The piracy scenario's four phases, then Done."""
    clock = Clock()
    return [
        *embed("owner", 1, "dual", {"key null": 0.84, "key true": 1.0}, clock),
        *piracy("pirate", 2, "01-owner", True, clock),
        *embed("square", 3, "pattern", {"key": 0.99}, clock),
        *piracy("pirate-square", 4, "03-square", False, clock),
        Done("completed", time=clock()),
    ]


def until_second_piracy(script: list[Event]) -> int:
    """The index of the second piracy job's start."""
    starts = [
        i
        for i, e in enumerate(script)
        if isinstance(e, Phase) and e.name == "piracy" and e.status == "start"
    ]
    return starts[1]


def folded(events: list[Event]) -> DashboardState:
    state = DashboardState()
    for event in events:
        state.apply(event)
    return state


# -- the state --------------------------------------------------------------------------------
def test_the_state_keeps_both_attacks_each_from_step_0() -> None:
    script = piracy_script()
    second = until_second_piracy(script)
    state = folded(script[:second])
    view = state.comparison
    assert len(view.runs) == 1 and not view.shown  # one attack: nothing to compare yet
    state.apply(script[second])
    assert view.shown and [r.name for r in view.runs] == ["pirate", "pirate-square"]
    for event in script[second + 1 :]:
        state.apply(event)
    assert view.shown and not view.active  # the final screen keeps it
    dual, pattern = view.runs
    assert (dual.label, pattern.label) == ("dual", "pattern") and view.title() == (
        "dual",
        "pattern",
    )
    assert dual.steps == pattern.steps == ATTACK_STEPS
    # step 0: the attacked model's recorded accuracy and its embedding's final marks; then
    # each evaluation, on the attack's own steps (the shared axis ran on to ~260)
    assert dual.nc.x == pattern.nc.x == [0, 10, 20, 30, 40]
    assert dual.nc.y[0] == pytest.approx(85.0) and dual.nc.y[-1] == pytest.approx(25.0)
    assert dual.owner.y[0] == pytest.approx(84.0)  # min(null 84%, true 100%): the paper's WM
    assert dual.owner.y[-1] == pytest.approx(14.0)  # the null mark collapsed
    assert dual.pirate.x == [10, 20, 30, 40] and max(dual.pirate.y) == pytest.approx(10.0)
    assert pattern.owner.y == pytest.approx([99.0] * 5)
    assert pattern.pirate.y[-1] == pytest.approx(95.0) and pattern.nc.y[-1] == pytest.approx(86.0)
    assert state.last_x > 2 * EMBED_STEPS  # the accuracy plot's axis is the session's


def test_another_job_ends_the_comparison_and_a_third_piracy_is_compared_with_the_second() -> None:
    script = piracy_script()
    state = folded(script)
    state.apply(Phase("nc", "start", info={"detector": "nc", "steps": 10}))
    assert not state.comparison.shown and len(state.comparison.runs) == 2
    third = piracy("pirate-again", 5, "01-owner", True, Clock())
    for event in third[:2]:
        state.apply(event)
    assert state.comparison.shown
    assert [r.name for r in state.comparison.runs] == ["pirate-square", "pirate-again"]
    assert state.comparison.title() == ("pattern", "dual")


def jobs_only(events: list[Event]) -> list[Event]:
    """Without the scenario's own phase markers: ``wmtui attack piracy`` runs."""
    return [e for e in events if not (isinstance(e, Phase) and "scenario" in e.info)]


def test_without_the_embeddings_the_attacked_runs_name_the_halves() -> None:
    """Two ``wmtui attack piracy --run runs/...`` in one session, on models it did not embed:
    the attacked runs' folders tell them apart, then the phases, then a number."""
    clock = Clock()
    first = jobs_only(piracy("first", 1, "dual", True, clock))
    view = folded([*first, *jobs_only(piracy("second", 2, "square", False, clock))]).comparison
    assert view.shown and view.title() == ("dual", "square")
    assert view.runs[0].nc.x[0] == 0 and view.runs[0].owner.x[0] == EVERY  # no marks before
    assert folded(first * 2).comparison.title() == ("dual 1", "dual 2")
    named = folded([*piracy("a", 1, "dual", True, clock), *piracy("b", 2, "dual", True, clock)])
    assert named.comparison.title() == ("a", "b")


# -- the dashboard ------------------------------------------------------------------------------
def half_tops(plot) -> tuple[dict[str, int], dict[str, int]]:
    """The topmost canvas row each colour reaches, left and right of the divider, inside
    the frame."""
    canvas = plot.query_one("#plot")
    divider, _ = plot.get_pixel_from_coordinate(plot.upper * (1 + GAP / 2), 0)
    sides: tuple[dict[str, int], dict[str, int]] = ({}, {})
    for y in range(1, canvas.size.height - 1):
        column = 0
        for segment in canvas.render_line(y):
            colour = segment.style.color.name if segment.style and segment.style.color else ""
            for x in range(max(column, 1), min(column + len(segment.text), canvas.size.width - 1)):
                if x != divider and segment.text[x - column] != " ":
                    sides[x > divider].setdefault(colour, y)
            column += len(segment.text)
    return sides


@pytest.mark.parametrize(
    ("size", "title", "legend", "xs", "ys"),
    [
        (
            (80, 24),
            "piracy: dual │ pattern",
            "━ acc  ━ owner  ━ pirate",
            ["0", "20", "0", "20", "40"],
            ["100", "50", "0"],
        ),
        (
            (120, 40),
            "piracy: dual (left) vs pattern (right)",
            "━ test acc  ━ owner's mark  ━ pirate's mark",
            ["0", "10", "20", "30", "0", "10", "20", "30", "40"],
            ["100", "80", "60", "40", "20", "0"],
        ),
    ],
)
async def test_the_second_piracy_takes_the_loss_plots_place_beside_the_first(
    size: tuple[int, int], title: str, legend: str, xs: list[str], ys: list[str]
) -> None:
    script = piracy_script()
    second = until_second_piracy(script)
    fake = FakeSession(script[:second])
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=size) as pilot:
        await settle(app, pilot)
        board = app.query_one(Dashboard)
        plot = app.query_one("#comparison-plot")
        assert not board.has_class("piracy") and not plot.display  # one piracy: the loss plot
        assert app.query_one("#loss-plot").display
        fake.feed(*script[second:])
        await settle(app, pilot)
        assert board.has_class("piracy") and plot.display and app.query_one("#acc-plot").display
        assert not app.query_one("#loss-plot").display
        assert plot.region.width == size[0] // 2  # the loss plot's place, beside the accuracy
        top, bottom = border_rows(app, "#comparison-plot")
        assert title in top and legend in bottom and "…" not in top + bottom
        assert tick_labels(plot) == (ys, xs)  # each attack's steps from 0, on one scale
        left, right = half_tops(plot)
        for colour, _, _ in LINES.values():  # all three lines in both halves
            assert colour in left and colour in right
        # the pirate's mark rises on the pattern model only
        assert right[LINES["pirate"][0]] < left[LINES["pirate"][0]]
        # the accuracy plot keeps every line across the session
        assert "━ test acc  ━ key null" in border_rows(app, "#acc-plot")[1]


async def test_a_scan_after_the_comparison_brings_its_bars_back() -> None:
    fake = FakeSession(piracy_script())
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(app, pilot)
        board = app.query_one(Dashboard)
        assert board.has_class("piracy")
        fake.feed(Phase("nc", "start", info={"detector": "nc", "steps": 10}))
        fake.feed(*[ClassScan("nc", c, 1.0 + c, True, 10, 10) for c in range(3)])
        await settle(app, pilot)
        assert not board.has_class("piracy") and not app.query_one("#comparison-plot").display
        assert app.query_one("#bars").display


# -- replay -------------------------------------------------------------------------------------
async def test_a_recorded_piracy_scenario_replays_the_comparison_and_rebuilds(
    tmp_path: Path,
) -> None:
    script = piracy_script()
    run = write_run(tmp_path / "run", script)
    second = script[until_second_piracy(script)].time
    clock = FakeClock()
    session = ReplaySession(run, 1.0, clock=clock)
    app = ReplayApp(lambda: session, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        clock.advance(second - 1.0)
        await settle(app, pilot)
        assert len(app.state.comparison.runs) == 1 and not app.dashboard.has_class("piracy")
        clock.advance(1000.0)
        await settle(app, pilot)
        assert app.state.status == "completed" and app.dashboard.has_class("piracy")
        top, bottom = border_rows(app, "#comparison-plot")
        assert "piracy: dual │ pattern" in top and "━ acc  ━ owner  ━ pirate" in bottom
        assert app.state.comparison.runs[1].pirate.y[-1] == pytest.approx(95.0)
        session.send(Seek(-1000.0))
        await settle(app, pilot)
        assert not app.dashboard.has_class("piracy") and not app.state.comparison.runs
        assert app.query_one("#loss-plot").display
        clock.advance(1000.0)
        await settle(app, pilot)
        assert (
            app.dashboard.has_class("piracy")
            and "dual │ pattern" in border_rows(app, "#comparison-plot")[0]
        )
