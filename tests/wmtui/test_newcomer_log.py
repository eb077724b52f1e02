"""The 80x24 event log as a newcomer reads it: results whole (verdict first and short,
details after), and 60 "checkpoint saved" lines folded into one updating line."""

from __future__ import annotations

from types import SimpleNamespace

from engine.events import Log
from engine.jobs import referee as referee_jobs
from engine.metrics import make_verdict
from engine.session import JobContext
from tests.wmtui.fakes import FakeSession, classic_script
from wmtui.tui.app import WmtuiApp
from wmtui.tui.widgets.event_log import EventLog

#: what an 80-column log shows of a line before it ends it with "…"
LOG_WIDTH = 78


def rows(log: EventLog) -> list[str]:
    return [log.render_line(y).text.rstrip() for y in range(log.size.height)]


async def test_phase_end_lines_are_whole_at_80x24() -> None:
    fake = FakeSession(classic_script())
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        app.pump()
        await pilot.pause()
        lines = [line for line in app.query_one("#log", EventLog).lines if line.startswith("==")]
    ended = [line for line in lines if "flagged" in line or "acc" in line]
    assert ended, lines
    assert all(len(line) <= LOG_WIDTH for line in ended), ended
    assert "== 2/2 gan: flagged class 7 · acc 88.79% (was 89.03%)" in ended[-1], ended


async def test_checkpoint_lines_fold_into_one_updating_line() -> None:
    saves = [Log(f"checkpoint saved: runs/df/checkpoint.safetensors (step {i})") for i in range(60)]
    fake = FakeSession([Log("start"), *saves, Log("after")])
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        app.pump()
        await pilot.pause()
        lines = list(app.query_one("#log", EventLog).lines)
    saved = [line for line in lines if "checkpoint saved" in line]
    assert len(saved) == 1 and "×60" in saved[0] and "step 59" in saved[0], lines
    assert lines.index(saved[0]) == lines.index("start") + 1 and lines[-1] == "after"


def test_the_pirate_s_verdict_comes_first_and_short(monkeypatch) -> None:
    verdict = make_verdict(230, 230, chance=0.1, alpha=1e-3, clean_rate=0.0)
    verdict = type(verdict)(
        **{
            **verdict.to_dict(),
            "verified": False,
            "null_acc": 0.1,
            "true_acc": 1.0,
            "threshold": 0.5,
            "null_reason": "null 10.00% and true 100.00% against T 50%; "
            "chance 1/10 (clean rate 0.0000 lower)",
        }
    )
    scheme = SimpleNamespace(verify=lambda *a: verdict)
    monkeypatch.setattr(referee_jobs, "get_scheme", lambda name: scheme)
    logged: list[Log] = []
    ctx = JobContext(logged.append)
    key = SimpleNamespace(scheme="dual", describe=lambda: "dual(owner=pirate)")
    result = SimpleNamespace(claims=[key], model=None)
    referee_jobs.referee_claims(ctx, result, SimpleNamespace(data=None), None)
    first = logged[0].message
    assert first.startswith("pirate claim: NOT verified: null accuracy 10.00% is below T 50%")
    assert len(first) <= LOG_WIDTH and "chance 1/10" in logged[1].message


def test_the_truncation_reason_comes_first_and_short() -> None:
    from engine.watermarks.dfad import truncation_lines

    first, detail = truncation_lines(7, 40, 0.00123, 0.0045, 0.045, 3)
    assert first.startswith("distillation truncated at epoch 7/40") and len(first) <= LOG_WIDTH
    assert "0.00123" in first and "0.045" in detail and "3 epochs" in detail
