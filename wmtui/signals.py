"""How a wmtui process ends: SIGTERM and SIGHUP handled as Ctrl-C is, and a fast exit.

SIGTERM (``kill``, a batch scheduler, systemd) and SIGHUP (a closed terminal, a dropped SSH
session) get one handler, installed once by the console script (:mod:`wmtui.entry`) for every
command: each does what Ctrl-C does at that moment. Where a command has armed Ctrl-C (a
headless run, a sweep) the signal raises the same KeyboardInterrupt, so every command's
existing clean stop runs; where a screen is up, the screen's hook (:func:`on_stop_signal`)
stops its worker and closes; where nothing runs yet the process ends at once. The run's
summary names the signal, the exit status is 128 + its number (143, 129), and a second signal
ends the process at once: every run file is written atomically, so the last checkpoint is
intact whatever moment that is.

Apart from the console script so that the commands and screens that arm these hooks import
this module, not the script that imports them (no import cycle).
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable

from engine import stopping  # tiny, and a signal handler must not import

#: the signals handled like Ctrl-C (SIGINT itself is armed by the commands, see above)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
#: behind a screen: how long its workers get to stop, then the screen to close, before exit
SCREEN_STOP_S, SCREEN_CLOSE_S = 4.0, 0.8
#: a signal this soon after the first is the same stop delivered twice (to the process group
#: and by a parent passing it on, as ``wmtui serve`` does), not a second, impatient one
REPEAT_S = 0.5
_FIRST = [0.0]
#: what the running screen does on a stop signal (last armed first); empty when headless
_HOOKS: list[Callable[[str], bool]] = []


class Signalled(KeyboardInterrupt):
    """A stop signal, delivered where Ctrl-C's KeyboardInterrupt is caught."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def install_stop_signals() -> None:
    """SIGTERM and SIGHUP stop cleanly; one inherited as ignored (``nohup``) stays ignored."""
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, _on_stop_signal)


def reclaim_stop_signals() -> None:
    """Take SIGTERM back where a library took it (Textual's web driver makes it a bare exit
    of the app, which loses the signal's name and status), if this process installed ours."""
    if signal.getsignal(signal.SIGHUP) is not _on_stop_signal:
        return  # not run through main() (a test's app, say): nothing of ours to reclaim
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) not in (_on_stop_signal, signal.SIG_IGN):
            signal.signal(signum, _on_stop_signal)


def _on_stop_signal(signum: int, frame: object) -> None:
    name = signal.Signals(signum).name
    if stopping.signalled():
        if time.monotonic() - _FIRST[0] < REPEAT_S:  # the same stop, delivered twice
            return
        os._exit(128 + signum)  # a second signal: end now, the last checkpoint is whole
    _FIRST[0] = time.monotonic()
    stopping.note_signal(name)
    if signum == signal.SIGHUP:
        _leave_the_terminal()
    if any([hook(name) for hook in reversed(_HOOKS)]):  # every hook hears it
        threading.Thread(target=_finish_behind_the_screen, args=(signum,), daemon=True).start()
        return
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        raise Signalled(name)
    else:  # nothing started that a signal could leave half done
        _flush()
        os._exit(128 + signum)


def on_stop_signal(hook: Callable[[str], bool]) -> Callable[[], None]:
    """Until the returned function is called, a stop signal calls ``hook(name)`` in the main
    thread (a screen schedules its own clean quit there) instead of raising
    KeyboardInterrupt; a hook that returns False (its screen has closed) passes it on. The
    hook runs inside a signal handler: it should only schedule."""
    _HOOKS.append(hook)

    def disarm() -> None:
        if hook in _HOOKS:
            _HOOKS.remove(hook)

    return disarm


def _finish_behind_the_screen(signum: int) -> None:
    """The screen was asked to quit; this thread makes sure the process ends even where the
    screen cannot: after a hangup Textual's output thread dies on the dead terminal and the
    event loop can block on its full queue for good. The workers are stopped here (each
    completes its run folder), the screen gets a moment to close and restore the terminal,
    then the process ends with the signal's status."""
    from engine.session import stop_every_worker

    stop_every_worker(SCREEN_STOP_S)
    time.sleep(SCREEN_CLOSE_S)
    _flush()
    os._exit(128 + signum)


def _leave_the_terminal() -> None:
    """After a hangup the terminal is gone and every write to it fails (EIO): what is still
    said goes nowhere rather than ending the clean stop with an error. A terminal that still
    answers (``kill -HUP`` with the window open), pipes and files are kept."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (1, 2):  # reading the dead terminal ends in EOF already
        with contextlib.suppress(OSError):
            if stat.S_ISCHR(os.fstat(fd).st_mode) and not os.isatty(fd):  # hung up: EIO
                os.dup2(devnull, fd)
    os.close(devnull)


def signalled_code() -> int | None:
    """128 + the number of the signal that stopped this process, or None."""
    name = stopping.signalled()
    return 128 + signal.Signals[name].value if name else None


def leave(code: int | str | None) -> None:
    """Exit without the interpreter's teardown: with torch, sympy and Textual loaded it takes
    seconds (4 s measured on a busy 2-core machine) after the work is done, which is what
    made Ctrl-C and ctrl+q feel slow. Every run file is already written atomically or
    flushed line by line; what remains is to stop any worker, flush the console, and go.
    A process a signal stopped exits 128 + its number unless it failed on its own."""
    from engine.session import stop_every_worker

    stop_every_worker()
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    by_signal = signalled_code()
    if by_signal is not None and code in (0, 130, None):
        code = by_signal
    _flush()
    os._exit(code if isinstance(code, int) else 0)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (wmtui ... | head)
            stream.flush()
