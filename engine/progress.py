"""Progress of work that runs outside the step loop, so a wait is never silent.

Rendering the synthetic digits (16 s on a first launch), verifying every key set at the end
of an embedding (8-21 s) and a distillation's first epoch (20 s) used to show nothing. They
report here; the report is a :class:`~engine.events.Log` of level :data:`LEVEL`, which the
live view shows in its status line (not its log) and a headless run prints now and then.

Data code has no session: as with :mod:`engine.stopping`, the job binds where reports go to
the worker thread (:func:`reporting`) and :func:`report` does nothing when nothing is bound.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

#: the Log level of a progress report
LEVEL = "progress"
#: a task says nothing for its first AFTER seconds (a quick one stays quiet), then reports
#: at most every EVERY seconds, and its end once it has said anything
AFTER = 1.0
EVERY = 1.0

Say = Callable[[str, str], None]  # (message, level): JobContext.log
_bound = threading.local()


@contextlib.contextmanager
def reporting(say: Say) -> Iterator[None]:
    """Send this thread's :func:`report` calls to ``say`` while the block runs."""
    previous = getattr(_bound, "say", None)
    _bound.say = say
    try:
        yield
    finally:
        _bound.say = previous


def line(what: str, done: int, total: int) -> str:
    """``rendering synthetic digits: 3,000/70,000 (4%)``."""
    share = 100 * done / total if total else 100
    return f"{what}: {done:,}/{total:,} ({share:.0f}%)"


class Throttle:
    """Says a task's progress through ``say`` once it has taken :data:`AFTER` seconds, then
    at most every :data:`EVERY` seconds, and its end (``done == total``) once it has spoken."""

    def __init__(self, say: Say) -> None:
        self.say = say
        self._started: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def __call__(self, what: str, done: int, total: int) -> None:
        now = time.monotonic()
        started = self._started.setdefault(what, now)
        last = self._last.get(what)
        if last is None:
            if now - started < AFTER or (done >= total and AFTER > 0):
                return  # quick so far (or done before it was worth a word)
        elif done < total and now - last < EVERY:
            return
        self._last[what] = now
        self.say(line(what, done, total), LEVEL)


def report(what: str, done: int, total: int) -> None:
    """Progress of ``what`` on this thread, if a job listens (see :func:`reporting`)."""
    say = getattr(_bound, "say", None)
    if say is None:
        return
    throttle = getattr(_bound, "throttle", None)
    if throttle is None or throttle.say is not say:
        throttle = _bound.throttle = Throttle(say)
    throttle(what, done, total)
