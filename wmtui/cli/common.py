"""What every command module shares: error handling, config building, headless driving.

Kept apart from ``wmtui.cli`` so command modules (embed/verify, attack, detect) can import it
without an import cycle through the app that registers them.
"""

from __future__ import annotations

import functools
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from engine.config import load_toml
from engine.errors import UserError
from engine.jobs import JobSpec
from engine.jobs.api import record_failure
from engine.runs import RunDir
from engine.session import EventSink, Job, Session
from wmtui.cli.headless import HeadlessReporter

DEBUG = {"on": False}

JsonFlag = Annotated[bool, typer.Option("--json", help="one JSON object per line on stdout")]
OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="run directory to create (default: runs/<command>-<time>)"),
]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", help="TOML file with a [train] table")
]


def fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"wmtui: error: {message}", err=True)
    raise typer.Exit(code)


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
        values.update(table.get("train", table))
    values.update(given)
    return values


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_spec(spec: JobSpec, json_mode: bool) -> tuple[int, RunDir | None]:
    """Check the spec (bad input: exit 2, nothing written), make its folder, run it headless."""
    built = spec.validate().build()
    return run_headless(built.job, built.run, json_mode), built.run


def run_headless(
    job: Job, run: RunDir | None, json_mode: bool, extra_sinks: Sequence[EventSink] = ()
) -> int:
    """Drive a session to its end in the foreground; Ctrl-C stops it cleanly."""
    sink = run.event_sink() if run is not None else None
    session = Session(job, ([sink] if sink else []) + list(extra_sinks)).start()
    reporter = HeadlessReporter(json_mode)
    try:
        for event in session.events():
            reporter(event)
    except KeyboardInterrupt:
        reporter.say("interrupted: stopping (checkpoint kept)")
        session.stop()
        for event in session.poll():
            reporter(event)
        return 130
    finally:
        reporter.close()
        if sink is not None:
            session.join(2.0)
            sink.close()
    record_failure(session, run)
    if session.status == "completed":
        return 0
    if session.status == "stopped":
        return 130
    return 2 if isinstance(session.error, UserError) else 1
