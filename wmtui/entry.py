"""The ``wmtui`` console script: Ctrl-C, SIGTERM and SIGHUP end it within 2 s, without a
traceback, and a run they stop still ends complete.

Until a headless run's worker starts, nothing has been written that an interrupt could
leave half done, but torch and its lazily imported parts take seconds to import, mostly
inside C extensions, where Python's KeyboardInterrupt waits until the extension returns
(and then printed a traceback from inside ``import torch``). So Ctrl-C keeps the operating
system's default action (end the process at once, exit status 130 in the shell) until
:func:`wmtui.cli.common.run_headless` starts a worker; from then on it stops the worker
cleanly and the run folder is completed. The playground reads ctrl+q/ctrl+c as keys.
SIGTERM and SIGHUP are handled in :mod:`wmtui.signals`.
"""

from __future__ import annotations

import contextlib
import signal
import sys

from wmtui.signals import Signalled, install_stop_signals, leave


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    install_stop_signals()
    code: int | str | None = 0
    try:
        from wmtui.cli.main import main as run_cli

        run_cli()
    except KeyboardInterrupt as exc:
        why = f"stopped by {exc.name}" if isinstance(exc, Signalled) else "interrupted"
        with contextlib.suppress(OSError):
            sys.stderr.write(f"wmtui: {why}\n")
        code = 130
    except SystemExit as exc:
        code = exc.code
    leave(code)


if __name__ == "__main__":
    main()
