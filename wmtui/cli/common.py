"""What every command module shares: error handling, config building, headless driving.

Kept apart from ``wmtui.cli`` so command modules (embed/verify, attack, detect) can import it
without an import cycle through the app that registers them.
"""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
import time
import traceback
import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from engine import commands as cmd
from engine import stopping
from engine.config import TrainConfig, check_table, load_toml, toml_table
from engine.errors import UserError
from engine.jobs import JobSpec
from engine.runs import RunDir
from engine.session import EventSink, Job, Session
from engine.threads import apply_threads
from wmtui.cli.flags import DeviceOption, JsonFlag, StudyDeviceOption  # noqa: F401
from wmtui.cli.headless import HeadlessReporter

DEBUG = {"on": False}
#: how long a stopped headless run waits for its worker (Stop is answered within ~1 s)
STOP_WAIT_S = 2.0

OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="run directory to create (default: runs/<command>-<time>)"),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML file with a [train] table")
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        metavar="N",
        help="CPU threads for torch (default: OMP_NUM_THREADS, else the free cores)",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"wmtui: error: {one_line(message)}", err=True)
    raise typer.Exit(code)


def one_line(message: str) -> str:
    """``message`` as one line: control characters and line separators it quotes from the
    user (a path or a value with a newline in it) are shown escaped, never as line breaks."""
    return "".join(
        repr(ch)[1:-1] if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in message
    )


def guarded(func: Callable[..., Any]) -> Callable[..., Any]:
    """Bad input becomes one line and exit 2; ``--debug`` adds the traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except UserError as exc:
            if DEBUG["on"]:
                traceback.print_exc()
            fail(str(exc))

    return wrapper


def train_values(given: dict[str, str], config_file: Path | None) -> dict[str, Any]:
    """A ``--config`` file's ``[train]`` table, overridden by flags (checked by the job)."""
    values: dict[str, Any] = {}
    if config_file is not None:
        table = load_toml(config_file)
        values.update(toml_table(table, "train", config_file) if "train" in table else table)
        check_table(values, TrainConfig, f"{config_file} [train]")
    values.update(given)
    return values


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_spec(
    spec: JobSpec, json_mode: bool, threads: int | None = None
) -> tuple[int, RunDir | None]:
    """Check the spec (bad input: exit 2, nothing written), make its folder, run it headless
    on the CPU thread count :func:`engine.threads.choose_threads` picks."""
    note = apply_threads(threads)
    built = spec.validate().build()
    return run_headless(built.job, built.run, json_mode, note=note), built.run


def run_headless(
    job: Job,
    run: RunDir | None,
    json_mode: bool,
    extra_sinks: Sequence[EventSink] = (),
    note: str = "",
) -> int:
    """Drive a session to its end in the foreground; Ctrl-C stops it cleanly. ``note`` (the
    thread choice) is logged first, into the run's events and the output."""
    sink = run.event_sink() if run is not None else None
    session = Session(job, ([sink] if sink else []) + list(extra_sinks))
    for line in note.splitlines():
        session.ctx.log(line)  # before start: the worker is not running yet
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: stop cleanly
    session.start()
    reporter = HeadlessReporter(json_mode)
    try:
        for event in session.events():
            reporter(event)
    except KeyboardInterrupt as exc:
        return stop_headless(session, reporter, getattr(exc, "name", "SIGINT"))
    finally:
        reporter.close()
        session.join(2.0)
        if sink is not None and not session.running:  # never close it under the worker
            sink.close()
    if session.status == "completed":
        return 0
    if session.status == "stopped":
        return 130
    return 2 if isinstance(session.error, UserError) else 1


def stop_headless(session: Session, reporter: HeadlessReporter, name: str) -> int:
    """Ctrl-C, SIGTERM or SIGHUP (``name``): the worker stops at its next safe point, keeps a
    checkpoint and writes the summary (naming the signal); a second one ends the process at
    once (the worker's files are written atomically, so the last checkpoint stays whole)."""
    stopping.note_signal(name)  # before the stop: the summary the worker writes names it
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # a second Ctrl-C: at once
    session.send(cmd.Stop())
    with contextlib.suppress(OSError):  # a hung-up terminal: the stop goes on regardless
        reporter.say(f"{'interrupted' if name == 'SIGINT' else name}: stopping, run folder kept")
    session.join(STOP_WAIT_S)
    for event in session.poll():
        with contextlib.suppress(OSError):
            reporter(event)
    return 130
