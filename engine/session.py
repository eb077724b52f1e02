"""A job running in a background thread: events out, commands in.

The worker owns the model and optimizer. Front ends read events (blocking or by polling) and
send commands; the worker applies them between steps through :meth:`JobContext.between_steps`.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import queue
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from engine import commands as cmd
from engine import stopping
from engine.errors import UserError
from engine.events import Done, Error, Event, Log, Phase, json_safe
from engine.stopping import StopRequested

__all__ = ["Job", "JobContext", "Session", "StopRequested"]

CommandHandler = Callable[[Any], str]
EventSink = Callable[[Event], None]


class JobContext:
    """What a running job sees: ``emit`` events and ``between_steps`` to take commands.

    Phases register handlers for the commands they understand (``on(SetLR, fn)``); a command
    nobody handles is acknowledged as ignored rather than silently dropped.
    """

    def __init__(self, emit: EventSink | None = None) -> None:
        self._emit = emit or (lambda event: None)
        self._commands: queue.Queue[cmd.Command] = queue.Queue()
        self._handlers: dict[type, CommandHandler] = {}
        self._started = time.monotonic()
        self.paused = False
        self.stop_requested = False
        #: set the moment Stop is sent (not when the worker reads it): work between steps
        #: polls it through :func:`engine.stopping.check`
        self.stop_flag = threading.Event()
        #: commands answered so far (applied, refused, ignored or declined at the end)
        self.acknowledged = 0
        #: a scenario sets these: SkipPhase ends the current phase like Stop, then goes on
        self.skippable = False
        self.skip_requested = False
        #: what the running phase works on, offered to follow-up jobs (jobs.followup)
        self.in_hand: Any = None
        #: the step of the latest event that had one: a follow-up's snapshot of a phase that
        #: does not count its own steps (an attack, a scan) is named by it
        self.last_step: int | None = None
        self._extra_sinks: list[EventSink] = []

    def emit(self, event: Event) -> None:
        event.time = round(time.monotonic() - self._started, 3)
        step = getattr(event, "step", None)
        if isinstance(step, int) and step > 0:
            self.last_step = step
        elif isinstance(event, Phase) and event.status == "start":
            self.last_step = None  # another phase: the last one's steps are not its own
        self._emit(event)
        for sink in self._extra_sinks:
            sink(event)

    @contextlib.contextmanager
    def nested(self, sink: EventSink) -> Iterator[None]:
        """Run another job inside this one (a follow-up mid-phase): its events also go to
        ``sink``, and the handlers and model in hand of the outer phase come back after."""
        handlers, in_hand = dict(self._handlers), self.in_hand
        self._extra_sinks.append(sink)
        try:
            yield
        finally:
            self._extra_sinks.remove(sink)
            self._handlers, self.in_hand = handlers, in_hand

    def log(self, message: str, level: str = "info") -> None:
        self.emit(Log(message, level))

    def send(self, command: cmd.Command) -> None:
        if isinstance(command, cmd.Stop):
            self.stop_flag.set()
        self._commands.put(command)

    def check_stop(self) -> None:
        """Raise StopRequested now if Stop was sent, without applying other commands (safe
        in the middle of an evaluation, where a trigger switch must wait for the step)."""
        if self.stop_flag.is_set():
            self.stop_requested = True
            self.paused = False
            raise StopRequested

    def on(self, kind: type, handler: CommandHandler) -> None:
        self._handlers[kind] = handler

    def reset_handlers(self) -> None:
        """Forget every phase's handlers (a scenario's next phase registers its own)."""
        self._handlers.clear()
        self.in_hand = None

    def off(self, *kinds: type) -> None:
        for kind in kinds:
            self._handlers.pop(kind, None)

    def between_steps(self) -> None:
        """Apply queued commands; block while paused; raise StopRequested on Stop (at
        once, even behind a long queue: what is left is declined when the job ends)."""
        while True:
            self.check_stop()
            try:
                command = (
                    self._commands.get(timeout=0.1) if self.paused else self._commands.get_nowait()
                )
            except queue.Empty:
                if self.paused:
                    continue
                return
            self.apply(command)
            if self.stop_requested:
                raise StopRequested

    def decline_unapplied(self) -> None:
        """Commands still queued when the job ends are answered too: none is dropped
        without a word."""
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            self.acknowledged += 1
            if isinstance(command, cmd.Stop) and self.stop_requested:
                continue  # it was applied: the flag it raised is what ended the job
            if isinstance(command, cmd.Stop):  # the job ended first: what a stop wants
                self.log(cmd.ALREADY_ENDED)
                continue
            self.log(cmd.not_applied(command), "warning")

    def apply(self, command: cmd.Command) -> None:
        """Answer one command now, in the calling thread: ``between_steps`` does it for the
        queue; a scripted stand-in for a worker (the UI's tests) answers in the same words.
        People read the log, so it names the action ("trigger switch"), never the class."""
        self.acknowledged += 1
        if isinstance(command, cmd.Stop):
            self.stop_requested = True
            self.paused = False
            self.log(cmd.STOPPING)
        elif isinstance(command, cmd.SkipPhase):
            if not self.skippable:
                self.log(cmd.ignored(command, cmd.NO_NEXT_PHASE), "warning")
                return
            self.stop_requested = self.skip_requested = True
            self.paused = False
            self.log(cmd.SKIPPING)
        elif isinstance(command, cmd.Pause):
            self.paused = True
            self.log(cmd.PAUSED)
        elif isinstance(command, cmd.Resume):
            was = self.paused
            self.paused = False
            self.log(cmd.RESUMED if was else cmd.NOT_PAUSED)
        elif type(command) in self._handlers:
            try:
                self.log(self._handlers[type(command)](command))
            except UserError as exc:
                self.log(cmd.refused(command, exc), "warning")
        else:
            self.log(cmd.ignored(command, cmd.NOT_TAKEN), "warning")


Job = Callable[[JobContext], dict[str, Any]]


#: every started session whose worker may still run (see :func:`stop_every_worker`)
_LIVE: weakref.WeakSet[Session] = weakref.WeakSet()


@atexit.register
def stop_every_worker(timeout: float = 5.0) -> None:
    """At exit, stop and wait for every worker still running. A daemon thread still inside
    torch while the interpreter finalises aborts the whole process ("terminate called
    without an active exception", exit 134) and loses the run's summary; a worker that will
    not end in time leaves without finalising, never with an abort."""
    alive = [session for session in list(_LIVE) if session.running]
    for session in alive:
        session.send(cmd.Stop())
    deadline = time.monotonic() + timeout
    for session in alive:
        session.join(max(0.0, deadline - time.monotonic()))
    if any(session.running for session in alive):
        sys.stderr.write("wmtui: a worker did not stop in time; leaving without cleanup\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(1)


class Session:
    """Runs ``job(ctx)`` in a daemon thread and streams its events.

    ``sinks`` run in the worker thread for every event (run files, headless output); the
    queue behind :meth:`events` and :meth:`poll` serves one reader (the UI).
    """

    def __init__(self, job: Job, sinks: list[EventSink] | None = None) -> None:
        self._job = job
        self._sinks = list(sinks or [])
        self._events: queue.Queue[Event] = queue.Queue()
        self.ctx = JobContext(self._publish)
        self._thread = threading.Thread(target=self._run, name="wmtui-worker", daemon=True)
        self.status: str | None = None
        self.summary: dict[str, Any] = {}
        self.error: BaseException | None = None

    def _publish(self, event: Event) -> None:
        for sink in self._sinks:
            sink(event)
        self._events.put(event)

    def _run(self) -> None:
        status, summary = "failed", {}
        stopping.bind(self.ctx.stop_flag)
        try:
            summary = self._job(self.ctx) or {}
            status = "stopped" if self.ctx.stop_requested else "completed"
        except StopRequested:
            status = "stopped"
            self.ctx.stop_requested = True  # raised by stopping.check: the Stop was applied
        except UserError as exc:
            self.error = exc
            step, phase = getattr(exc, "step", None), getattr(exc, "phase", "")
            self.ctx.emit(Error(str(exc), phase=phase, step=step))
        except Exception as exc:  # a bug: keep the traceback in the stream for the report
            self.error = exc
            self.ctx.emit(Error(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        finally:
            self.status, self.summary = status, json_safe(summary)
            self.ctx.decline_unapplied()
            self.ctx.emit(Done(status, self.summary))

    def start(self) -> Session:
        _LIVE.add(self)
        self._thread.start()
        return self

    def send(self, command: cmd.Command) -> None:
        self.ctx.send(command)

    def poll(self) -> list[Event]:
        """Everything queued so far, without blocking (the UI's timer calls this)."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def events(self) -> Iterator[Event]:
        """Block and yield events until ``Done``."""
        while True:
            event = self._events.get()
            yield event
            if isinstance(event, Done):
                return

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the worker to stop and wait at most ``timeout`` s; True if it ended."""
        self.send(cmd.Stop())
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
