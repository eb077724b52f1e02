"""A screen's answer to SIGTERM and SIGHUP: quit the way its quit key does.

The signal handler (:mod:`wmtui.signals`) runs in the main thread, which is the screen's event
loop; it must not run the quit itself (that waits for the worker), so it only schedules it,
through the loop's thread-safe wake-up. The quit then stops the worker, which completes the
run folder, and the screen closes as after ctrl+q.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from textual.app import App

from wmtui.signals import on_stop_signal, reclaim_stop_signals


def quit_on_stop_signal(app: App[Any], quit_: Callable[[], Awaitable[None] | None]) -> None:
    """Call from ``on_mount``: until the app has closed, a stop signal runs ``quit_``."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows; a closed loop
        loop.remove_signal_handler(signal.SIGTERM)  # the web driver's: exit without a stop
    reclaim_stop_signals()

    def hook(name: str) -> bool:
        if loop.is_closed() or not app.is_running:
            disarm()
            return False  # the screen is gone: the signal's default handling applies
        loop.call_soon_threadsafe(app.call_later, quit_)
        return True

    disarm = on_stop_signal(hook)
