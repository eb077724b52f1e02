"""The ``wmtui`` command: the playground by default, headless subcommands over the same engine.

Textual is imported only inside the commands that open the TUI, so headless runs on a box
without a usable terminal never load it. Exit codes: 0 ok, 1 verification/check failed or an
internal error, 2 bad input (one line; ``--debug`` shows the traceback).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from engine.config import TrainConfig
from engine.data import DATASETS, default_data_dir, is_present, load_dataset
from engine.errors import UserError
from engine.jobs import JobSpec
from engine.jobs.common import check_config
from engine.threads import apply_threads
from engine.watermarks import SCHEMES
from wmtui.cli.common import (
    DEBUG,
    ConfigOption,
    JsonFlag,
    OutOption,
    ThreadsOption,
    default_out,
    guarded,
    run_spec,
    train_values,
)
from wmtui.cli.options import field_names, listing, plugin_listing, with_dataclass_options
from wmtui.cli.watermarks import SCHEME_PARAMS, split_config


class DefaultTuiGroup(TyperGroup):
    """The root command group, with ``tui`` as the default command (``wmtui [tui] ...``).

    Arguments that start with an option the root does not own (``wmtui --scenario gan``,
    ``wmtui --dataset synthetic``) go to ``tui``, as if it had been written; ``--debug``
    given among them is still the root's. A bare word is a command name as before, so
    ``wmtui trian`` stays "No such command" with its suggestion, and plain ``wmtui`` (no
    arguments) opens the start screen through the callback.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        given = default_to_tui(args, self.root_options(ctx))
        # "wmtui --dataset synthetic" (tui implied) opens the start screen with the flags;
        # "wmtui tui --dataset synthetic" runs the single phase it always has
        IMPLIED_TUI["on"] = len(given) > len(args)
        return super().parse_args(ctx, given)

    def root_options(self, ctx: Any) -> set[str]:
        return {opt for param in self.get_params(ctx) for opt in param.opts}


#: whether this invocation's ``tui`` was implied (see :meth:`DefaultTuiGroup.parse_args`)
IMPLIED_TUI = {"on": False}


def default_to_tui(args: list[str], root_options: set[str]) -> list[str]:
    """``args`` with ``tui`` inserted after the root's own leading flags when what follows
    is an option; the root's ``--debug`` anywhere after it is moved in front."""
    args = list(args)
    i = 0
    while i < len(args) and args[i] in root_options:
        i += 1
    if i == len(args) or not args[i].startswith("-") or args[i] == "--":
        return args
    head, rest = args[:i], args[i:]
    hoisted = [a for a in rest if a == "--debug"]
    return [*head, *hoisted, "tui", *[a for a in rest if a != "--debug"]]


app = typer.Typer(
    cls=DefaultTuiGroup,
    add_completion=False,
    invoke_without_command=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="wmtui: embed, attack and detect watermarks in image classifiers, live.\n\n"
    "tui is the default command: wmtui alone opens the start screen, and tui's options work "
    "without it (wmtui --scenario gan --epochs 1; see wmtui tui --help).",
)
data_app = typer.Typer(help="List and fetch datasets.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")


ScenarioOption = Annotated[
    str | None,
    typer.Option(
        "--scenario",
        help="scenario preset or TOML file to start (wmtui run --list); "
        "without it the start screen offers them",
    ),
]


def print_version(value: bool) -> None:
    """``wmtui --version``: the one version source is ``engine.__version__`` (the package's
    metadata is generated from it at build time)."""
    if value:
        from engine import __version__

        typer.echo(f"wmtui {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks for errors")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=print_version, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Without a command, the playground (tui): the start screen, or with tui's options
    (wmtui --scenario gan, wmtui --dataset synthetic ...) straight away."""
    DEBUG["on"] = debug
    if ctx.invoked_subcommand is None:
        guarded(launch_scenario_tui)(None, {}, refresh=2.0, out=None, threads=None)


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
    threads: ThreadsOption = None,
) -> None:
    """Train a clean model headless and save it as a run."""
    spec = JobSpec(
        "train",
        config=train_values(given, config),
        out=out or default_out("train"),
        overwrite=overwrite,
    )
    raise typer.Exit(run_spec(spec, json_mode, threads)[0])


@app.command()
@guarded
def resume(
    run_dir: Annotated[Path, typer.Argument(metavar="RUN", help="run directory to continue")],
    epochs: Annotated[
        int | None, typer.Option("--epochs", help="train to this many epochs in total")
    ] = None,
    json_mode: JsonFlag = False,
    threads: ThreadsOption = None,
) -> None:
    """Go on with a stopped run: training from its last checkpoint, an embedding from the
    start, a scenario from its first phase not completed."""
    from wmtui.cli.resuming import resume_run

    raise typer.Exit(resume_run(run_dir, epochs, json_mode, threads))


@app.command(cls=plugin_listing("embed"))
@guarded
@with_dataclass_options(TrainConfig, *SCHEME_PARAMS)
def tui(
    given: dict[str, str],
    scheme: Annotated[
        str | None,
        typer.Option(
            "--scheme",
            help=f"watermark embedded while training ({'|'.join(SCHEMES.names())}|none; "
            "default: pattern, the TEST trigger)",
        ),
    ] = None,
    refresh: Annotated[float, typer.Option("--refresh", help="repaints per second (1-10)")] = 2.0,
    out: OutOption = None,
    config: ConfigOption = None,
    scenario: ScenarioOption = None,
    threads: ThreadsOption = None,
) -> None:
    """The playground (the default command): train live, steer it from the keyboard.

    With --scenario (or as plain wmtui, from the start screen) it runs a scenario's phases;
    training flags then override the scenario's [train] table. Its options work without
    writing tui (wmtui --scenario gan --epochs 1); training flags alone, so given, open the
    start screen with them applied (wmtui tui --epochs 1 runs one embedding phase)."""
    if scenario is not None:
        if scheme is not None or config is not None:
            raise UserError("--scenario takes its phases from the scenario; drop --scheme/--config")
        train_names = {f.name for f in dataclasses.fields(TrainConfig)}
        stray = sorted(set(given) - train_names)
        if stray:
            raise UserError(
                f"--{stray[0].replace('_', '-')} is a scheme flag; --scenario sets those"
            )
        launch_scenario_tui(scenario, given, refresh=refresh, out=out, threads=threads)
        return
    only_training = set(given) <= field_names(TrainConfig)
    if IMPLIED_TUI["on"] and given and only_training and scheme is None and config is None:
        # training flags alone (wmtui --dataset synthetic --epochs 3): the start screen, with
        # them applied to whichever scenario is chosen; checked before it opens
        check_config(TrainConfig.from_mapping(given), data=False)
        launch_scenario_tui(None, given, refresh=refresh, out=out, threads=threads)
        return
    train, scheme_values, name = split_config(given, config, scheme)
    if name == "none":
        if scheme_values:
            raise UserError(
                f"--scheme none takes no scheme flags (got --{next(iter(scheme_values))})"
            )
        spec = JobSpec("train", config=train)
    else:
        spec = JobSpec("embed", name, scheme_values, train)
    spec.out, spec.command = out or default_out("tui"), "tui"
    launch_tui(spec, refresh=refresh, threads=threads)


def check_refresh(refresh: float) -> None:
    if not 1.0 <= refresh <= 10.0:
        raise UserError(f"--refresh must be between 1 and 10, got {refresh}")


def launch_scenario_tui(
    name: str | None,
    overrides: dict[str, str],
    *,
    refresh: float,
    out: Path | None,
    threads: int | None,
) -> None:
    """A scenario in the playground; ``name`` None opens the start screen first (with
    ``overrides`` on it). The worker shares the process with the screen, so the thread
    choice leaves it a core."""
    check_refresh(refresh)
    note = apply_threads(threads, ui=True)
    from engine.studies.scenarios import Scenario, load_scenario
    from wmtui.tui.app import WmtuiApp
    from wmtui.tui.sessions import scenario_session

    def start(scenario: Scenario) -> tuple[Any, Path]:
        check_config(scenario.config(overrides))
        session, root = scenario_session(scenario, overrides, out or default_out(scenario.name))
        session.ctx.log(note)  # into the run, before the worker starts
        return session, root.path

    if name is None:  # the start screen shows the overrides, lets them change, applies them
        app_ = WmtuiApp(None, refresh=refresh, chooser=start, overrides=dict(overrides))
        overrides = {}
    else:
        scenario = load_scenario(name)
        session, path = start(scenario)
        app_ = WmtuiApp(lambda: session, refresh=refresh, run_path=path, scenario=scenario)
    app_.run()
    if app_.exit_message:
        typer.echo(app_.exit_message, err=True)


def launch_tui(spec: JobSpec, *, refresh: float, threads: int | None) -> None:
    """One training or embedding phase in the playground; the spec is checked (and its run
    folder made) before the screen opens."""
    check_refresh(refresh)
    note = apply_threads(threads, ui=True)
    checked = spec.validate()
    from wmtui.tui.app import WmtuiApp

    built = checked.build()
    assert built.run is not None

    def session() -> Any:
        started = built.session()
        started.ctx.log(note)  # into the run, before the worker starts
        return started

    app_ = WmtuiApp(session, refresh=refresh, run_path=built.run.path)
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
            typer.echo("\n".join(listing(f"{plugin.name:16} {mark}", plugin.summary, 22)))
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
    import wmtui.cli.attacks as attacks
    import wmtui.cli.detect as detect
    import wmtui.cli.imports as imports
    import wmtui.cli.keys as keys
    import wmtui.cli.replay as replay
    import wmtui.cli.report as report
    import wmtui.cli.reproduce as reproduce
    import wmtui.cli.scenario as scenario
    import wmtui.cli.sweep as sweep
    import wmtui.cli.threshold as threshold
    import wmtui.cli.watermarks as watermarks

    commands = (watermarks, keys, attacks, detect, replay, scenario, reproduce, report, sweep)
    commands += (imports, threshold)
    for module in commands:
        module.register(app)


_register_plugin_commands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()


__all__ = ["app", "main"]
