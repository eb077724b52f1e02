"""The ``extraction`` scenario: a pattern and an EWE model, each stolen by retraining within a
query budget, the two thefts side by side with a live query counter, then STRIP on the EWE
theft. The preset is read and checked as ``wmtui run`` reads it; the view is fed an event
stream shaped like a real run's (engine/jobs/attack.py: the job phase is the attack's name,
its start names the attack and the budget's ``query_cap``, every reading carries
``queries``; progress lines while the suspect answers before training)."""

from __future__ import annotations

import pytest

from engine import progress
from engine.attacks import ATTACKS, EVASION, EXTRACTION
from engine.events import Done, Event, Log, Metrics, Phase
from engine.studies.scenarios import load_scenario
from engine.watermarks import get_scheme
from tests.wmtui.fakes import FakeSession
from tests.wmtui.test_discrepancy_view import border_rows, settle
from wmtui.cli.headless import metrics_line
from wmtui.tui.app import WmtuiApp
from wmtui.tui.comparison_state import compared_kind
from wmtui.tui.dashboard import Dashboard
from wmtui.tui.state import DashboardState
from wmtui.tui.status import status_line

EMBED_STEPS, STEAL_STEPS, EVERY, CAP, ASKED = 60, 50, 10, 20_000, 20_000
ROOT = "runs/extraction"


# -- the preset ---------------------------------------------------------------------------------
def test_the_preset_steals_both_models_within_one_budget_then_serves_the_ewe_theft() -> None:
    scenario = load_scenario("extraction")
    phases = {p.name: p for p in scenario.phases}
    assert list(phases) == ["pattern", "ewe", "steal-pattern", "steal-ewe", "strip"]
    assert [phases[n].plugin for n in ("pattern", "ewe")] == ["pattern", "ewe"]
    get_scheme("ewe")  # registered, so the preset is not waiting on a missing scheme
    thefts = [phases["steal-pattern"], phases["steal-ewe"]]
    assert [t.on for t in thefts] == ["pattern", "ewe"]
    budgets = [t.parsed_budget() for t in thefts]
    assert budgets[0] == budgets[1]  # the same thief against both: only the scheme differs
    assert budgets[0].data_fraction == pytest.approx(1 / 3, abs=1e-3)
    assert budgets[0].queries > 0  # a cap, so the counter reads "answered/cap"
    assert {ATTACKS.get(t.plugin).family for t in thefts} == {EXTRACTION}
    strip = phases["strip"]
    assert (strip.plugin, strip.on) == ("strip-evasion", "steal-ewe")
    assert ATTACKS.get(strip.plugin).family == EVASION
    assert "does not choose" in scenario.description  # the survivor is fixed, and said so


# -- a recorded stream ----------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self, seconds: float = 1.0) -> float:
        self.now += seconds
        return self.now


def marker(name: str, status: str, index: int, kind: str, plugin: str, t: float) -> Phase:
    info = {"scenario": "extraction", "title": name, "kind": kind, "plugin": plugin}
    return Phase(
        name, status, index=index, total=5, info=info | {"run": run_of(index, name)}, time=t
    )


def run_of(index: int, name: str) -> str:
    return f"{ROOT}/0{index}-{name}"


def embed(name: str, index: int, scheme: str, clock: Clock) -> list[Event]:
    events: list[Event] = [
        marker(name, "start", index, "embed", scheme, clock()),
        Phase(
            "embed",
            "start",
            info={"scheme": scheme, "steps": EMBED_STEPS, "run": run_of(index, name)},
            time=clock(),
        ),
    ]
    for step in range(EVERY, EMBED_STEPS + 1, EVERY):
        share = step / EMBED_STEPS
        events.append(
            Metrics(
                "embed", step, share, 0.01, 1.0, 900.0, 0.9 * share, {"key": share}, time=clock()
            )
        )
    final = {"test_acc": 0.9, "retention": {"key": 1.0}}
    return [
        *events,
        Phase("embed", "end", info=final, time=clock()),
        marker(name, "end", index, "embed", scheme, clock()),
    ]


def steal(name: str, index: int, source: str, kept: float, clock: Clock) -> list[Event]:
    """Retraining: the suspect answers its transfer set up front (progress lines), then the
    stolen model trains; its accuracy rises, and the key rises to ``kept``."""
    info = {"test_acc": 0.9, "attack": "retraining", "data_fraction": 0.3333}
    info |= {"steps": STEAL_STEPS, "source_run": f"{ROOT}/{source}", "query_cap": CAP}
    events: list[Event] = [
        marker(name, "start", index, "attack", "retraining", clock()),
        Phase("retraining", "start", info=info, time=clock()),
        Log("before the attack: test acc 90.00%, key 100.00%", time=clock()),
        Log(f"the suspect answered 12,000 of {CAP:,} queries", progress.LEVEL, time=clock()),
        Log(f"the suspect answered {ASKED:,} of {CAP:,} queries", progress.LEVEL, time=clock()),
    ]
    for step in range(EVERY, STEAL_STEPS + 1, EVERY):
        share = step / STEAL_STEPS
        events.append(
            Metrics(
                "retraining",
                step,
                share * 5,
                0.1,
                2.0 - share,
                3000.0,
                0.85 * share,
                {"key": kept * share},
                queries=ASKED,
                time=clock(0.1),
            )
        )
    end = {"test_acc": 0.85, "removed": kept < 0.5, "kept_accuracy": True, "wm_accuracy": kept}
    return [
        *events,
        Phase("retraining", "end", info=end | {"retention": {"key": kept}}, time=clock()),
        marker(name, "end", index, "attack", "retraining", clock()),
    ]


def strip(clock: Clock) -> list[Event]:
    """strip-evasion plans no steps and plots nothing: it serves the model behind a filter."""
    info = {"test_acc": 0.85, "attack": "strip-evasion", "steps": 0, "query_cap": 0}
    info |= {"source_run": run_of(4, "steal-ewe")}
    return [
        marker("strip", "start", 5, "attack", "strip-evasion", clock()),
        Phase("strip-evasion", "start", info=info, time=clock()),
        Log("served behind model => strip(n=64, ...): false positives 5.1%", time=clock()),
        Phase("strip-evasion", "end", info={"test_acc": 0.83, "removed": True}, time=clock()),
        marker("strip", "end", 5, "attack", "strip-evasion", clock()),
    ]


def extraction_script() -> list[Event]:
    clock = Clock()
    return [
        *embed("pattern", 1, "pattern", clock),
        *embed("ewe", 2, "ewe", clock),
        *steal("steal-pattern", 3, "01-pattern", 0.1, clock),
        *steal("steal-ewe", 4, "02-ewe", 0.8, clock),
        *strip(clock),
        Done("completed", time=clock()),
    ]


def index_of(script: list[Event], name: str, status: str, nth: int = 0) -> int:
    found = [
        i
        for i, e in enumerate(script)
        if isinstance(e, Phase) and e.name == name and e.status == status
    ]
    return found[nth]


def folded(events: list[Event]) -> DashboardState:
    state = DashboardState()
    for event in events:
        state.apply(event)
    return state


# -- the state ------------------------------------------------------------------------------------
def test_attacks_are_compared_by_kind_and_unknown_ones_are_not() -> None:
    assert compared_kind("retraining") == compared_kind("distill") == EXTRACTION
    assert compared_kind("piracy") == "piracy"
    assert compared_kind("ft-basic") == compared_kind("strip-evasion") == ""
    assert compared_kind("an-attack-from-another-install") == compared_kind(None) == ""


def test_the_query_counter_reads_the_answers_then_the_readings() -> None:
    script = extraction_script()
    second = index_of(script, "retraining", "start", 1)
    state = folded(script[: second + 2])  # the second theft's start and its first log
    assert "queries" not in status_line(state)  # nothing answered yet: no count to show
    state.apply(script[second + 2])  # a progress line while the suspect answers
    assert status_line(state) == "RUNNING the suspect answered 12,000 of 20,000 queries"
    state.apply(script[second + 3])
    assert status_line(state) == "RUNNING the suspect answered 20,000 of 20,000 queries"
    first_reading = next(i for i in range(second, len(script)) if isinstance(script[i], Metrics))
    assert first_reading == second + 4
    state.apply(script[first_reading])
    line = status_line(state)
    assert line.startswith(f"RUNNING step {EVERY}/{STEAL_STEPS} queries 20,000/20,000 ep 1.00")
    for event in script[first_reading + 1 : index_of(script, "strip-evasion", "start")]:
        state.apply(event)
    # a phase without a cap and without answers says nothing of queries
    state.apply(script[index_of(script, "strip-evasion", "start")])
    assert "queries" not in status_line(state)
    uncapped = DashboardState()
    uncapped.apply(Phase("distill", "start", info={"attack": "distill", "steps": 5}))
    uncapped.apply(Metrics("distill", 1, 0.1, 0.1, 1.0, 10.0, queries=1_234))
    assert " queries 1,234 ep " in status_line(uncapped)


def test_headless_lines_count_the_answers_of_an_attack_only() -> None:
    theft = Metrics("retraining", 16, 1.0, 0.09, 2.2, 3000.0, 0.5, {"key": 0.1}, queries=ASKED)
    assert metrics_line(theft).endswith("key 10.00% | 20,000 queries")
    for quiet in (0, None):  # a weight attack, training
        assert "queries" not in metrics_line(Metrics("embed", 1, 0.1, 0.1, 1.0, 1.0, queries=quiet))


def test_the_two_thefts_side_by_side_stay_through_strip() -> None:
    script = extraction_script()
    second = index_of(script, "retraining", "start", 1)
    state = folded(script[:second])
    view = state.comparison
    assert len(view.runs) == 1 and not view.shown  # one theft: nothing to compare yet
    state.apply(script[second])
    assert view.shown and view.kind == EXTRACTION
    for event in script[second + 1 : index_of(script, "strip-evasion", "start") + 1]:
        state.apply(event)
    assert view.shown and not view.active  # STRIP plots nothing: the comparison stays
    for event in script[index_of(script, "strip-evasion", "start") + 1 :]:
        state.apply(event)
    assert view.shown and state.status == "completed"
    pattern, ewe = view.runs
    assert view.title() == ("pattern", "ewe") and view.heading() == "retraining"
    # a stolen model is a fresh one: its lines start at its first evaluation, not at the
    # suspect's numbers, and run over the attack's own steps
    assert pattern.nc.x == ewe.nc.x == [10, 20, 30, 40, 50]
    assert pattern.owner.y[-1] == pytest.approx(10.0) and ewe.owner.y[-1] == pytest.approx(80.0)
    assert not pattern.pirate.x and not ewe.pirate.x
    # another job that plots ends it (a scan, or training)
    state.apply(Phase("nc", "start", info={"detector": "nc", "steps": 10}))
    assert not view.shown


def test_a_piracy_is_not_compared_with_a_theft() -> None:
    from tests.wmtui.test_piracy_view import Clock as PiracyClock
    from tests.wmtui.test_piracy_view import piracy

    clock = Clock()
    state = folded(steal("steal-pattern", 3, "01-pattern", 0.1, clock))
    for event in piracy("pirate", 4, "01-pattern", False, PiracyClock()):
        state.apply(event)
    assert not state.comparison.shown and [r.kind for r in state.comparison.runs] == ["piracy"]


# -- the dashboard --------------------------------------------------------------------------------
async def test_the_playground_sets_the_thefts_side_by_side_with_the_query_counter() -> None:
    script = extraction_script()
    second = index_of(script, "retraining", "start", 1)
    reading = next(i for i in range(second, len(script)) if isinstance(script[i], Metrics))
    fake = FakeSession(script[: reading + 1])
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(app, pilot)
        board = app.query_one(Dashboard)
        assert board.has_class("comparison") and board.has_class("extraction")
        assert not board.has_class("piracy")
        plot = app.query_one("#comparison-plot")
        assert plot.display and not app.query_one("#loss-plot").display
        assert plot.region.width == 40  # the loss plot's place, beside the accuracy plot
        top, bottom = border_rows(app, "#comparison-plot")
        assert "retraining: pattern │ ewe" in top
        assert "owner" in bottom and "pirate" not in bottom
        status = str(app.query_one("#status").render())
        assert status.startswith("RUNNING step 10/50 queries 20,000/20,000 ep")
        fake.feed(*script[reading + 1 :])  # the rest of the theft, STRIP, the end
        await settle(app, pilot)
        assert app.state.status == "completed" and board.has_class("comparison")
        assert "retraining: pattern │ ewe" in border_rows(app, "#comparison-plot")[0]
