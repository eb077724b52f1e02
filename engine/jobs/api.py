"""Running a job from Python: ``run(spec)`` blocks and returns a :class:`Result`;
``start(spec)`` returns a :class:`Running` job whose events can be iterated while it works.

The same session, event stream and run folder as the CLI and the playground. Bad input
raises the typed :class:`~engine.errors.UserError` subclasses the CLI turns into exit code 2,
before anything is written; a job that fails while running raises the same error (or
:class:`JobFailed` for a bug, with the traceback in its message and in ``events.jsonl``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine import commands as cmd
from engine.errors import UserError
from engine.events import Done, Event
from engine.jobs.spec import JobSpec
from engine.session import EventSink


class JobFailed(RuntimeError):
    """A job that failed for a reason other than bad input (a bug: see its message)."""


@dataclasses.dataclass(frozen=True)
class Result:
    """A finished job: ``status`` (completed or stopped), its ``summary`` (what
    ``summary.json`` holds) and its run folder ``path`` (None when run without ``out``).
    Pass it as the input run of the next job (``from_run=result``, ``run=result``)."""

    status: str
    summary: dict[str, Any]
    path: Path | None


class Running:
    """A started job: iterate :meth:`events`, steer it with :meth:`send`, end it with
    :meth:`stop`, collect :meth:`result`."""

    def __init__(self, spec: JobSpec, sinks: list[EventSink] | None = None) -> None:
        built = spec.build()
        self.run = built.run
        self.session = built.session(sinks).start()
        self._finished = False

    def events(self) -> Iterator[Event]:
        """Every event until ``Done`` (blocking between them)."""
        if self._finished:
            return
        for event in self.session.events():
            if isinstance(event, Done):
                self._finished = True
            yield event

    def send(self, command: cmd.Command) -> None:
        self.session.send(command)

    def stop(self, timeout: float = 2.0) -> bool:
        return self.session.stop(timeout)

    def result(self) -> Result:
        """Wait for the end; raise the job's error if it failed."""
        for _ in self.events():
            pass
        self.session.join()
        if self.session.status == "failed":
            error = self.session.error
            if isinstance(error, UserError):
                raise error
            raise JobFailed(f"the job failed: {error!r}") from error
        path = self.run.path if self.run is not None else None
        return Result(self.session.status or "completed", dict(self.session.summary), path)


def start(spec: JobSpec, on_event: EventSink | None = None) -> Running:
    """Check ``spec`` (raising on bad input, nothing written), make its run folder and start
    it in a worker thread. ``on_event`` is called in that thread for every event."""
    return Running(spec, [on_event] if on_event is not None else None)


def run(spec: JobSpec, on_event: EventSink | None = None) -> Result:
    """Run ``spec`` to its end and return the :class:`Result`."""
    return start(spec, on_event).result()
