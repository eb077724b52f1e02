import time

import pytest

from engine import commands as cmd
from engine.config import TrainConfig
from engine.errors import ConfigError
from engine.events import Done, Error, Log, Metrics
from engine.jobs import train_job
from engine.session import JobContext, Session


def slow_job(ctx: JobContext) -> dict:
    for step in range(10_000):
        ctx.between_steps()
        time.sleep(0.01)
        ctx.emit(Metrics("p", step, 0.0, 0.1, 1.0, 100.0))
    return {"steps": 10_000}


def test_stop_returns_within_two_seconds() -> None:
    session = Session(slow_job).start()
    time.sleep(0.2)
    started = time.monotonic()
    assert session.stop()
    assert time.monotonic() - started < 2.0
    events = list(session.events())
    assert isinstance(events[-1], Done) and events[-1].status == "stopped"


def test_pause_blocks_and_resume_continues() -> None:
    session = Session(slow_job).start()
    time.sleep(0.1)
    session.send(cmd.Pause())
    time.sleep(0.3)
    session.poll()
    time.sleep(0.3)
    assert not [e for e in session.poll() if isinstance(e, Metrics)]
    session.send(cmd.Resume())
    time.sleep(0.3)
    assert [e for e in session.poll() if isinstance(e, Metrics)]
    assert session.stop()


def test_every_command_is_acknowledged() -> None:
    session = Session(slow_job).start()
    session.send(cmd.SetTrigger("square"))
    session.send(cmd.Pause())
    session.send(cmd.Resume())
    time.sleep(0.3)
    session.stop()
    logs = [e.message for e in session.events() if isinstance(e, Log)]
    assert any("trigger switch ignored" in m for m in logs)
    assert "paused" in logs and "resumed" in logs


def test_user_errors_become_error_events() -> None:
    def bad(ctx: JobContext) -> dict:
        raise ConfigError("nope")

    session = Session(bad).start()
    events = list(session.events())
    assert isinstance(events[0], Error) and events[0].message == "nope"
    assert events[-1].status == "failed" and isinstance(session.error, ConfigError)


def test_train_job_streams_phase_metrics_and_summary() -> None:
    config = TrainConfig(
        dataset="synthetic", epochs=1, train_size=512, test_size=128, batch_size=128, eval_every=4
    )
    session = Session(train_job(config, None)).start()
    events = list(session.events())
    kinds = [e.kind for e in events]
    assert kinds[0] == "log" and "phase" in kinds and kinds[-1] == "done"
    done = events[-1]
    assert done.status == "completed" and done.summary["steps"] == 4
    assert done.summary["test_acc"] == pytest.approx(
        [e for e in events if e.kind == "metrics"][-1].test_acc
    )
