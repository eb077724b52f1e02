"""A job running in a background thread: events out, commands in.

The worker owns the model and optimizer. Front ends read events (blocking or by polling) and
send commands; the worker applies them between steps through :meth:`JobContext.between_steps`.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from engine import commands as cmd
from engine.errors import UserError
from engine.events import Done, Error, Event, Log, json_safe

CommandHandler = Callable[[Any], str]
EventSink = Callable[[Event], None]


class StopRequested(Exception):
    """Raised inside the worker when the user stops the job; unwinds to the session."""


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
        #: a scenario sets these: SkipPhase ends the current phase like Stop, then goes on
        self.skippable = False
        self.skip_requested = False

    def emit(self, event: Event) -> None:
        event.time = round(time.monotonic() - self._started, 3)
        self._emit(event)

    def log(self, message: str, level: str = "info") -> None:
        self.emit(Log(message, level))

    def send(self, command: cmd.Command) -> None:
        self._commands.put(command)

    def on(self, kind: type, handler: CommandHandler) -> None:
        self._handlers[kind] = handler

    def reset_handlers(self) -> None:
        """Forget every phase's handlers (a scenario's next phase registers its own)."""
        self._handlers.clear()

    def off(self, *kinds: type) -> None:
        for kind in kinds:
            self._handlers.pop(kind, None)

    def between_steps(self) -> None:
        """Apply queued commands; block while paused; raise StopRequested on Stop."""
        while True:
            try:
                command = (
                    self._commands.get(timeout=0.1) if self.paused else self._commands.get_nowait()
                )
            except queue.Empty:
                if self.paused:
                    continue
                return
            self._apply(command)
            if self.stop_requested:
                raise StopRequested

    def _apply(self, command: cmd.Command) -> None:
        name = type(command).__name__
        if isinstance(command, cmd.Stop):
            self.stop_requested = True
            self.paused = False
            self.log("stop requested: ending after this step")
        elif isinstance(command, cmd.SkipPhase):
            if not self.skippable:
                self.log("SkipPhase ignored: there is no next phase", "warning")
                return
            self.stop_requested = self.skip_requested = True
            self.paused = False
            self.log("skipping to the next phase: ending this one after this step")
        elif isinstance(command, cmd.Pause):
            self.paused = True
            self.log("paused")
        elif isinstance(command, cmd.Resume):
            was = self.paused
            self.paused = False
            self.log("resumed" if was else "resume: not paused")
        elif type(command) in self._handlers:
            try:
                self.log(self._handlers[type(command)](command))
            except UserError as exc:
                self.log(f"{name} refused: {exc}", "warning")
        else:
            self.log(f"{name} ignored: the current phase does not take it", "warning")


Job = Callable[[JobContext], dict[str, Any]]


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
        try:
            summary = self._job(self.ctx) or {}
            status = "stopped" if self.ctx.stop_requested else "completed"
        except StopRequested:
            status = "stopped"
        except UserError as exc:
            self.error = exc
            step, phase = getattr(exc, "step", None), getattr(exc, "phase", "")
            self.ctx.emit(Error(str(exc), phase=phase, step=step))
        except Exception as exc:  # a bug: keep the traceback in the stream for the report
            self.error = exc
            self.ctx.emit(Error(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}"))
        finally:
            self.status, self.summary = status, json_safe(summary)
            self.ctx.emit(Done(status, self.summary))

    def start(self) -> Session:
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
