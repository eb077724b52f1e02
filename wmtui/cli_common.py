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

from engine.config import TrainConfig, load_toml
from engine.data import DATASETS
from engine.errors import UserError
from engine.jobs import resolve_device
from engine.models import MODELS
from engine.runs import RunDir
from engine.session import EventSink, Job, Session
from wmtui.headless import HeadlessReporter

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


def build_config(given: dict[str, str], config_file: Path | None) -> TrainConfig:
    """TOML values, overridden by flags; names and device checked before anything starts."""
    values: dict[str, Any] = {}
    if config_file is not None:
        table = load_toml(config_file)
        values.update(table.get("train", table))
    values.update(given)
    return check_config(TrainConfig.from_mapping(values))


def check_config(config: TrainConfig) -> TrainConfig:
    """Dataset, model and device names checked before anything starts."""
    if config.dataset != "auto":
        DATASETS.get(config.dataset)
    MODELS.get(config.model)
    resolve_device(config.device)
    return config


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


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
    if run is not None and session.status == "failed" and not (run.path / "summary.json").exists():
        message = str(session.error).splitlines()[0] if session.error else "failed"
        run.write_summary({"status": "failed", "error": message})
    if session.status == "completed":
        return 0
    if session.status == "stopped":
        return 130
    return 2 if isinstance(session.error, UserError) else 1
