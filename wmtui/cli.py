"""The ``wmtui`` command: the playground by default, headless subcommands over the same engine.

Textual is imported only inside the commands that open the TUI, so headless runs on a box
without a usable terminal never load it. Exit codes: 0 ok, 1 verification/check failed or an
internal error, 2 bad input (one line; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from engine.config import TrainConfig, load_toml
from engine.data import DATASETS, default_data_dir, is_present, load_dataset
from engine.errors import UserError
from engine.events import Done
from engine.jobs import new_run_manifest, resolve_device, train_job
from engine.models import MODELS
from engine.runs import RunDir
from engine.session import Job, Session
from wmtui.headless import HeadlessReporter
from wmtui.options import with_dataclass_options

app = typer.Typer(
    add_completion=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="wmtui: embed, attack and detect watermarks in image classifiers, live.",
)
data_app = typer.Typer(help="List and fetch datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

_debug = {"on": False}

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
            if _debug["on"]:
                traceback.print_exc()
            fail(str(exc))

    return wrapper


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks for errors")] = False,
) -> None:
    """Without a command, start the playground on the offline default (--dataset auto)."""
    _debug["on"] = debug
    if ctx.invoked_subcommand is None:
        guarded(launch_tui)(TrainConfig(), refresh=2.0, out=None)


def build_config(given: dict[str, str], config_file: Path | None) -> TrainConfig:
    """TOML values, overridden by flags; names and device checked before anything starts."""
    values: dict[str, Any] = {}
    if config_file is not None:
        table = load_toml(config_file)
        values.update(table.get("train", table))
    values.update(given)
    config = TrainConfig.from_mapping(values)
    if config.dataset != "auto":
        DATASETS.get(config.dataset)
    MODELS.get(config.model)
    resolve_device(config.device)
    return config


def default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_headless(job: Job, run: RunDir | None, json_mode: bool) -> int:
    """Drive a session to its end in the foreground; Ctrl-C stops it cleanly."""
    sink = run.event_sink() if run is not None else None
    session = Session(job, [sink] if sink else []).start()
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


@app.command()
@guarded
@with_dataclass_options(TrainConfig)
def train(
    given: dict[str, str],
    out: OutOption = None,
    json_mode: JsonFlag = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="replace a run already in --out")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Train a clean model headless and save it as a run."""
    cfg = build_config(given, config)
    out = out or default_out("train")
    run = RunDir.create(out, new_run_manifest(cfg, "train"), overwrite=overwrite)
    code = run_headless(train_job(cfg, run), run, json_mode)
    raise typer.Exit(code)


@app.command()
@guarded
def resume(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory to continue")],
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="train to this many epochs in total")
    ] = None,
    json_mode: JsonFlag = False,
) -> None:
    """Continue a run from its last checkpoint."""
    run = RunDir.open(run_dir)
    manifest = run.manifest()
    cfg = TrainConfig.from_mapping(manifest["config"])
    if epochs is not None:
        cfg = cfg.replace(epochs=epochs)
        run.write_manifest({**manifest, "config": cfg.to_dict()})
    code = run_headless(train_job(cfg, run, resume=True), run, json_mode)
    raise typer.Exit(code)


@app.command()
@guarded
@with_dataclass_options(TrainConfig)
def tui(
    given: dict[str, str],
    refresh: Annotated[float, typer.Option("--refresh", help="repaints per second (1-10)")] = 2.0,
    out: OutOption = None,
    config: ConfigOption = None,
) -> None:
    """The playground (the default command): train live, steer it from the keyboard."""
    launch_tui(build_config(given, config), refresh=refresh, out=out)


def launch_tui(config: TrainConfig, *, refresh: float, out: Path | None) -> None:
    if not 1.0 <= refresh <= 10.0:
        raise UserError(f"--refresh must be between 1 and 10, got {refresh}")
    from wmtui.app import WmtuiApp, training_session

    out = out or default_out("tui")
    run = RunDir.create(out, new_run_manifest(config, "tui"))
    app_ = WmtuiApp(lambda: training_session(config, run), refresh=refresh)
    app_.run()
    if app_.exit_message:
        typer.echo(app_.exit_message, err=True)


@data_app.command("list")
@guarded
def data_list(
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="where datasets live")] = None,
    json_mode: JsonFlag = False,
) -> None:
    """Show every dataset name and whether it is available offline."""
    folder = data_dir or default_data_dir()
    for plugin in DATASETS:
        present = plugin.name == "synthetic" or is_present(plugin.name, folder)
        row = {"name": plugin.name, "present": present, "summary": plugin.summary}
        if json_mode:
            typer.echo(json.dumps(row))
        else:
            mark = "yes" if present else "no "
            typer.echo(f"{plugin.name:16} {mark}  {plugin.summary}")
    if not json_mode:
        typer.echo(f"(data dir: {folder})", err=True)


@data_app.command("fetch")
@guarded
def data_fetch(
    name: Annotated[str, typer.Argument(help="dataset name")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="where datasets live")] = None,
    json_mode: JsonFlag = False,
) -> None:
    """Download a dataset into --data-dir (needs the network once)."""
    DATASETS.get(name)
    loaded = load_dataset(name, data_dir, download=True)
    data = loaded.data
    row = {
        "name": data.name,
        "train": len(data.train_x),
        "test": len(data.test_x),
        "shape": list(data.shape),
        "classes": data.num_classes,
        "source": data.source,
    }
    human = (
        f"{data.name}: {row['train']} train / {row['test']} test images, "
        f"shape {tuple(data.shape)}, in {data.source}"
    )
    typer.echo(json.dumps(row) if json_mode else human)


def _register_plugin_commands() -> None:
    """Commands that live in their own modules (they import this one lazily)."""
    from wmtui import cli_attacks

    cli_attacks.register(app)


_register_plugin_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()


__all__ = ["Done", "app", "dataclasses", "main", "sys"]
