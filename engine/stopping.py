"""Cooperative stop for work that runs outside the step loop.

The step loop takes commands between steps, but a worker also spends seconds where no step
runs: rendering or reading a dataset, evaluating probes batch by batch, generating keys,
verifying every key set, setting up a scan. Those places call :func:`check`, which raises
:class:`StopRequested` once the session's stop flag is up. The flag is bound to the worker
thread by the session, so data and metric code stays free of any session type, and nothing
ever kills a thread: the stop always unwinds through the job's own ``finally`` blocks, which
record the summary and keep the last good checkpoint.
"""

from __future__ import annotations

import threading


class StopRequested(Exception):
    """Raised inside the worker when the user stops the job; unwinds to the session."""


_bound = threading.local()


def bind(flag: threading.Event | None) -> None:
    """Make ``flag`` the stop flag of the calling thread (None: unbind)."""
    _bound.flag = flag


def requested() -> bool:
    flag: threading.Event | None = getattr(_bound, "flag", None)
    return flag is not None and flag.is_set()


def check() -> None:
    """Raise :class:`StopRequested` if this thread's job was asked to stop."""
    if requested():
        raise StopRequested
