"""Replay a recorded run's ``events.jsonl`` through the same dashboard as a live session.

A :class:`ReplaySession` speaks the app's session protocol (start/poll/send/stop) but has no
worker: the file is read once, up front, and :meth:`ReplaySession.poll` releases whatever
has come due on a replay clock (recorded ``time`` scaled by the speed). So a class can watch
a recorded GPU run on a laptop, and a bad file is one error line before any UI starts.

Timing rules, so a replay never makes an audience stare at a frozen screen:

* recorded idle gaps longer than :data:`MAX_GAP` seconds (a paused run, a slow dataset
  load) are compressed to :data:`MAX_GAP`;
* a clock that jumps backwards (``wmtui resume`` appends a new recording whose clock
  restarts at 0) continues from where the previous recording ended.

No Textual here: the session is unit-tested with an injected clock, without a UI.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import commands as cmd
from engine.errors import RunError
from engine.events import Done, Event, Log, event_from_dict
from engine.runs import EVENTS

MAX_GAP = 5.0
SPEEDS = (1.0, 4.0, 16.0)

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class SetSpeed(cmd.Command):
    """Replay only: play ``speed`` recorded seconds per wall-clock second."""

    speed: float


@dataclasses.dataclass(frozen=True)
class Seek(cmd.Command):
    """Replay only: jump ``seconds`` forward (positive) or backward (negative)."""

    seconds: float


def events_file(run: Path) -> Path:
    """``RUN/events.jsonl``; a path to the ``.jsonl`` file itself is accepted too.

    Any other file (``summary.json``, a manifest) is refused by what replay takes, not read
    as a broken recording: "line 1 is corrupt" would send the user hunting for damage."""
    if run.is_file():
        if run.suffix != ".jsonl":
            parent = run.parent / EVENTS
            hint = f" (try: wmtui replay {run.parent})" if parent.is_file() else ""
            raise RunError(f"replay takes a run folder or its {EVENTS}, not {run.name}{hint}")
        return run
    if not run.exists():
        raise RunError(f"run directory not found: {run}")
    path = run / EVENTS
    if not path.is_file():
        raise RunError(f"nothing to replay: {run} has no {EVENTS}")
    return path


def load_events(run: Path) -> tuple[list[Event], str | None]:
    """Every recorded event, and a warning when a torn last line had to be skipped.

    Only the last line may be broken (a crash mid-write); a bad line anywhere else means the
    file is not a recording, and that is a :class:`RunError`.
    """
    path = events_file(run)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise RunError(f"{path} is not a text event log") from None
    except OSError as exc:
        raise RunError(f"cannot read {path}: {exc.strerror or exc}") from None
    numbered = [(n, line) for n, line in enumerate(lines, 1) if line.strip()]
    events: list[Event] = []
    warning = None
    for i, (number, line) in enumerate(numbered):
        try:
            events.append(parse_line(line))
        except ValueError as exc:
            if i < len(numbered) - 1:
                raise RunError(f"{path} line {number} is corrupt: {exc}") from None
            warning = f"skipped the torn last line {number} of {EVENTS} (the run was cut off)"
    if not events:
        raise RunError(f"nothing to replay: {path} holds no events")
    return events, warning


def parse_line(line: str) -> Event:
    """One JSON line to an event; anything malformed is a ValueError with a short reason."""
    try:
        data: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        event = event_from_dict(data)
    except TypeError as exc:  # missing required fields
        raise ValueError(str(exc)) from None
    if not isinstance(event.time, int | float) or not math.isfinite(event.time):
        raise ValueError(f"time is not a finite number: {event.time!r}")
    return event


def timeline(events: list[Event], max_gap: float = MAX_GAP) -> list[float]:
    """Replay time of each event: recorded gaps capped at ``max_gap``; a clock that went back
    (an appended recording) counts from its own restart."""
    times: list[float] = []
    now, previous = 0.0, 0.0
    for event in events:
        gap = event.time - previous
        if gap < 0:
            gap = max(event.time, 0.0)
        now += min(gap, max_gap)
        previous = event.time
        times.append(now)
    return times


class ReplaySession:
    """A recorded run played back on a clock; see the module docstring for the timing rules.

    ``poll`` returns the events whose replay time has come. After a backward seek the
    dashboard must be rebuilt: the app calls :meth:`take_reset` before polling and, when it
    answers True, starts from a fresh state; the next ``poll`` re-sends everything up to the
    new position.
    """

    def __init__(
        self,
        run: Path,
        speed: float = 1.0,
        *,
        clock: Clock = time.monotonic,
        max_gap: float = MAX_GAP,
        live: bool = False,
    ) -> None:
        if not speed > 0:
            raise RunError(f"replay speed must be positive, got {speed}")
        self.run = run
        #: the run is still going (a sweep's running trial): its recording ends where it has
        #: got to, which is not a run cut off
        self.live = live
        events, warning = load_events(run)
        if warning is not None and not live:  # a running trial's last line is being written
            events.insert(0, Log(warning, "warning"))
        self._events = events
        self._times = timeline(events, max_gap)
        self._clock = clock
        self.speed = float(speed)
        self.paused = False
        self.stopped = False
        self._started = False
        self._origin = 0.0  # replay position at the wall-clock instant _since
        self._since = 0.0
        self._cursor = 0  # events before this index have been released
        self._acks: list[Event] = []
        self._reset = False
        self._end_announced = False

    # -- the clock --------------------------------------------------------------------------
    @property
    def duration(self) -> float:
        return self._times[-1]

    @property
    def position(self) -> float:
        """Seconds into the recording (gaps compressed), clamped to the end."""
        if not self._started or self.paused:
            return self._origin
        moved = (self._clock() - self._since) * self.speed
        return min(self._origin + moved, self.duration)

    @property
    def finished(self) -> bool:
        return self._cursor >= len(self._events)

    def _rebase(self, position: float) -> None:
        """Restart the clock from ``position``: speed changes and seeks never jump."""
        self._origin = min(max(position, 0.0), self.duration)
        self._since = self._clock()

    # -- the session protocol ---------------------------------------------------------------
    def start(self) -> ReplaySession:
        self._started = True
        self._rebase(0.0)
        return self

    def poll(self) -> list[Event]:
        """Events now due, then acknowledgements of commands (like the worker's Log lines)."""
        if self.stopped:
            return []
        end = bisect.bisect_right(self._times, self.position)
        out = self._events[self._cursor : end]
        self._cursor = max(self._cursor, end)
        out += self._acks
        self._acks = []
        if self.finished and not self._end_announced:
            self._end_announced = True
            out.append(Log(self._end_message()))
        return out

    def send(self, command: cmd.Command) -> None:
        if isinstance(command, cmd.Pause):
            self._pause()
        elif isinstance(command, cmd.Resume):
            self._resume()
        elif isinstance(command, SetSpeed):
            self.set_speed(command.speed)
        elif isinstance(command, Seek):
            self.seek(command.seconds)
        else:
            self._ack(f"{command.what} ignored: not available in replay", "warning")

    def stop(self, timeout: float = 2.0) -> bool:
        """Nothing runs in the background: stopping is immediate."""
        self.stopped = True
        return True

    # -- controls ---------------------------------------------------------------------------
    def _pause(self) -> None:
        if self.paused:
            self._ack("pause: already paused")
            return
        self._rebase(self.position)
        self.paused = True
        self._ack("paused")

    def _resume(self) -> None:
        if not self.paused:
            self._ack("resume: not paused")
            return
        self.paused = False
        self._rebase(self._origin)
        self._ack("resumed")

    def set_speed(self, speed: float) -> None:
        if not speed > 0:
            self._ack(f"speed {speed} refused: must be positive", "warning")
            return
        self._rebase(self.position)
        self.speed = float(speed)
        self._ack(f"replay speed ×{speed:g}")

    def seek(self, seconds: float) -> None:
        """Move the clock; going back before released events asks the app for a rebuild."""
        target = min(max(self.position + seconds, 0.0), self.duration)
        self._rebase(target)
        if bisect.bisect_right(self._times, target) < self._cursor:
            self._cursor = 0
            self._reset = True
            self._end_announced = False
        self._ack(f"seek {seconds:+g} s -> t={target:.1f} s")

    def take_reset(self) -> bool:
        """True once after a backward seek: the dashboard should start from a fresh state."""
        reset, self._reset = self._reset, False
        return reset

    # -- helpers ----------------------------------------------------------------------------
    def _ack(self, message: str, level: str = "info") -> None:
        self._acks.append(Log(message, level))

    def _end_message(self) -> str:
        if isinstance(self._events[-1], Done):
            return "replay finished: ← rewinds, ctrl+q quits"
        if self.live:
            return "replay finished: the trial is still running; this was its recording so far"
        return "replay finished: the recording ends without a Done event (the run was cut off)"

    def status_line(self) -> str:
        """``REPLAY ×4 t=12.3/80.0 s``, with ``paused`` or ``end`` when that is the case."""
        line = f"REPLAY ×{self.speed:g} t={self.position:.1f}/{self.duration:.1f} s"
        if self.paused:
            line += " paused"
        elif self.finished:
            line += " end"
        return line
