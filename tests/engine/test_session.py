import threading
import time
from collections.abc import Callable

import pytest

from engine import commands as cmd
from engine.config import TrainConfig
from engine.errors import ConfigError
from engine.events import Done, Error, Event, Log, Metrics
from engine.jobs import train_job
from engine.session import JobContext, Session


def slow_job(ctx: JobContext) -> dict:
    for step in range(10_000):
        ctx.between_steps()
        time.sleep(0.01)
        ctx.emit(Metrics("p", step, 0.0, 0.1, 1.0, 100.0))
    return {"steps": 10_000}


class Heard:
    """A session's events as they come, with waits on what has come: no sleeping and hoping
    the worker got there (on a busy 2-core machine it may not have)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait(self, what: Callable[[Event], bool], after: int = 0, timeout: float = 60) -> int:
        """Index of the first event from ``after`` on that is ``what``; fails after ``timeout``
        (a guard against a hang, not a measurement)."""

        def found() -> int | None:
            return next((i for i, e in enumerate(self.events) if i >= after and what(e)), None)

        with self._changed:
            assert self._changed.wait_for(lambda: found() is not None, timeout), "never came"
            index = found()
        assert index is not None
        return index


def said(message: str) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, Log) and e.message == message


def is_metrics(e: Event) -> bool:
    return isinstance(e, Metrics)


def test_stop_returns_within_two_seconds() -> None:
    heard = Heard()
    session = Session(slow_job, [heard]).start()
    heard.wait(is_metrics)  # running, between two steps
    started = time.monotonic()
    assert session.stop()
    # Stop latency is what this test measures: the product promises 2 s (README). The job
    # checks between 10 ms steps, so it ends in tens of ms; 2 s covers a machine whose two
    # cores are busy with other tests, and a worker that ignored Stop would never end.
    assert time.monotonic() - started < 2.0
    events = list(session.events())
    assert isinstance(events[-1], Done) and events[-1].status == "stopped"


def test_pause_blocks_and_resume_continues() -> None:
    heard = Heard()
    session = Session(slow_job, [heard]).start()
    heard.wait(is_metrics)
    session.send(cmd.Pause())
    paused = heard.wait(said(cmd.PAUSED))
    time.sleep(0.3)  # room for a worker that did not block to emit steps (never a failure)
    session.send(cmd.Resume())
    resumed = heard.wait(said(cmd.RESUMED), after=paused)
    assert not [e for e in heard.events[paused:resumed] if is_metrics(e)]
    heard.wait(is_metrics, after=resumed)  # and it goes on
    assert session.stop()


def test_every_command_is_acknowledged() -> None:
    heard = Heard()
    session = Session(slow_job, [heard]).start()
    session.send(cmd.SetTrigger("square"))
    session.send(cmd.Pause())
    session.send(cmd.Resume())
    heard.wait(said(cmd.RESUMED))
    session.stop()
    logs = [e.message for e in session.events() if isinstance(e, Log)]
    assert cmd.ignored(cmd.SetTrigger("square"), cmd.NOT_TAKEN) in logs
    assert logs.index(cmd.PAUSED) < logs.index(cmd.RESUMED)


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
