"""The ``wmtui`` console script: Ctrl-C at any moment ends it within 2 s, without a traceback.

Until a headless run's worker starts, nothing has been written that an interrupt could
leave half done, but torch and its lazily imported parts take seconds to import, mostly
inside C extensions, where Python's KeyboardInterrupt waits until the extension returns
(and then printed a traceback from inside ``import torch``). So Ctrl-C keeps the operating
system's default action (end the process at once, exit status 130 in the shell) until
:func:`wmtui.cli.common.run_headless` starts a worker; from then on it stops the worker
cleanly and the run folder is completed. The playground reads ctrl+q/ctrl+c as keys.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code: int | str | None = 0
    try:
        from wmtui.cli.main import main as run_cli

        run_cli()
    except KeyboardInterrupt:
        sys.stderr.write("wmtui: interrupted\n")
        code = 130
    except SystemExit as exc:
        code = exc.code
    leave(code)


def leave(code: int | str | None) -> None:
    """Exit without the interpreter's teardown: with torch, sympy and Textual loaded it takes
    seconds (4 s measured on a busy 2-core machine) after the work is done, which is what
    made Ctrl-C and ctrl+q feel slow. Every run file is already written atomically or
    flushed line by line; what remains is to stop any worker, flush the console, and go."""
    from engine.session import stop_every_worker

    stop_every_worker()
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (wmtui ... | head)
            stream.flush()
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
