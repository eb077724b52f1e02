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


def check() -> None:
    """Raise :class:`StopRequested` if this thread's job was asked to stop."""
    flag: threading.Event | None = getattr(_bound, "flag", None)
    if flag is not None and flag.is_set():
        raise StopRequested


# -- the signal that ended the process ----------------------------------------------------------
# SIGTERM and SIGHUP stop a run as Ctrl-C does (wmtui.entry installs that); the run's summary
# names the signal, so an operator reading a folder later knows it was killed, not stopped by
# hand. A signal is process-wide, so this is too.
_signalled: list[str] = []


def note_signal(name: str) -> None:
    """Record that the signal ``name`` (``"SIGTERM"``) asked this process to stop."""
    if not _signalled:
        _signalled.append(name)


def signalled() -> str | None:
    """The name of the signal that asked this process to stop, or None."""
    return _signalled[0] if _signalled else None


# -- torch's lazily imported optimizer machinery ----------------------------------------------
# A ``torch.optim`` optimizer imports ``torch._dynamo`` (with sympy: one to three seconds), and
# an import cannot be interrupted. The training loop no longer uses torch.optim
# (:mod:`engine.optimizers`); the trigger searches still do, and wait here for the import,
# which runs in a background thread, in small slices that answer Stop.
_optimizers_ready = threading.Event()
_importing = threading.Lock()
_import_started = False


def _import_optimizer_machinery() -> None:
    try:
        import torch._dynamo  # noqa: F401
    finally:
        _optimizers_ready.set()


def optimizers_ready() -> None:
    """Before a worker's first ``torch.optim`` optimizer: start the import (once, in a
    background thread) and wait for it, checking for Stop every 50 ms."""
    global _import_started
    if _optimizers_ready.is_set():
        return
    with _importing:
        start, _import_started = not _import_started, True
    if start:
        threading.Thread(target=_import_optimizer_machinery, daemon=True).start()
    while not _optimizers_ready.wait(0.05):
        check()
