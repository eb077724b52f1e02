"""The status line and keys as a newcomer meets them: an attack run mid-scan hands the status
line back to the scan, and keys pressed after the session ended say they do nothing, once."""

from __future__ import annotations

import pytest

from engine.events import ClassScan, Done, Event, Log, Metrics, Phase
from tests.wmtui.fakes import FakeSession, training_script
from wmtui.tui.app import WmtuiApp
from wmtui.tui.state import DashboardState
from wmtui.tui.status import status_line

SCAN_ACC, ATTACK_ACC = 0.9831, 0.9932


def scan_then_attack(attack_ends: bool) -> list[Event]:
    """A GAN scan; `a` mid-scan runs ft-basic on the model in hand; `n` ends it early."""
    scan_info = {"detector": "gan", "steps": 1200, "test_acc": SCAN_ACC, "classes": 10}
    events: list[Event] = [Phase("gan", "start", info=scan_info)]
    events += [ClassScan("gan", c, 3.0 + c, step=100, steps=1200) for c in range(10)]
    events += [
        Log("ft-basic on gan's model as it is now"),
        Phase("ft-basic", "start", info={"steps": 400, "test_acc": SCAN_ACC}),
        Metrics("ft-basic", 160, 0.4, 0.01, 0.2, 9000.0, test_acc=ATTACK_ACC),
    ]
    if attack_ends:
        events.append(Phase("ft-basic", "end", info={"test_acc": ATTACK_ACC}))
    events.append(Log("ft-basic ended early; back to gan"))
    events += [ClassScan("gan", c, 2.0 + c, step=300, steps=1200) for c in range(10)]
    return events


@pytest.mark.parametrize("attack_ends", [True, False])
def test_the_status_returns_to_the_scan_after_an_attack_mid_scan(attack_ends: bool) -> None:
    state = DashboardState()
    for event in scan_then_attack(attack_ends):
        state.apply(event)
    line = status_line(state)
    assert "gan scan step 300/1200" in line, line
    assert "98.31%" in line and "99.32%" not in line, line
    state.apply(Done("completed"))
    assert "98.31%" in status_line(state) and "99.32%" not in status_line(state)


def test_the_scan_s_removal_phase_still_shows_its_training() -> None:
    """A scan's removal starts inside the scan's phase: it is not a follow-up to undo."""
    state = DashboardState()
    info = {"detector": "gan", "steps": 1200, "test_acc": SCAN_ACC}
    state.apply(Phase("gan", "start", info=info))
    state.apply(ClassScan("gan", 3, 1.0, done=True, step=1200, steps=1200))
    state.apply(Phase("gan-remove", "start", info={"steps": 300, "flagged_class": 3}))
    state.apply(Metrics("gan-remove", 30, 0.1, 0.01, 0.3, 5000.0, test_acc=0.97))
    assert status_line(state).startswith("RUNNING step 30/300")


def log_lines(app: WmtuiApp) -> list[str]:
    return list(app.query_one("#log").lines)


async def test_keys_after_the_end_say_once_that_they_do_nothing() -> None:
    fake = FakeSession([*training_script(40), Done("completed")])
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        app.pump()
        await pilot.pause()
        before = len(fake.sent)
        await pilot.press("n", "space", "plus", "c", "n")
        await pilot.pause()
        lines = log_lines(app)
    assert len(fake.sent) == before  # nothing sent to a worker that has ended
    assert not any(line.startswith("> ") for line in lines), lines
    ended = [line for line in lines if "session has ended" in line]
    assert len(ended) == 1, lines


def test_a_stop_that_comes_after_the_end_is_not_a_warning() -> None:
    """Ctrl-C as a headless job ends: "stopping" was followed by "warning: stop not applied:
    the job has ended", which read as if the stop had failed."""
    from engine import commands as cmd
    from engine.session import JobContext

    said: list[Event] = []
    ctx = JobContext(said.append)
    ctx.send(cmd.Stop())
    ctx.send(cmd.ScaleLR(2.0))
    ctx.decline_unapplied()
    logs = [e for e in said if isinstance(e, Log)]
    stop, scale = logs
    assert (
        stop.level == "info"
        and "already ended" in stop.message
        and "not applied" not in stop.message
    )
    assert scale.level == "warning" and "not applied" in scale.message  # a real loss: said so


async def test_a_finished_replay_still_rewinds(tmp_path) -> None:
    """The "keys do nothing now" note is the live worker's: a replay's clock answers after
    the recording's end (its last line says "← rewinds")."""
    import json

    from tests.wmtui.test_replay import FakeClock
    from wmtui.tui.replay import ReplaySession
    from wmtui.tui.replay_app import ReplayApp

    recording = [*training_script(40), Done("completed")]
    for i, event in enumerate(recording):
        event.time = float(i)
    (tmp_path / "events.jsonl").write_text(
        "".join(json.dumps(e.to_dict()) + "\n" for e in recording)
    )
    clock = FakeClock()
    app = ReplayApp(lambda: ReplaySession(tmp_path, 16.0, clock=clock), refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        clock.advance(60)
        app.pump()
        await pilot.pause()
        assert app.state.status == "completed"
        await pilot.press("left")
        app.pump()
        await pilot.pause()
        lines = log_lines(app)
    assert any("seek -10 s" in line for line in lines), lines
    assert not any("session has ended" in line for line in lines), lines
