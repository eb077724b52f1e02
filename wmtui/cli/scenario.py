"""``wmtui run SCENARIO``: a scenario headless, with the events the playground shows.

    wmtui run classic --json                  # a preset (wmtui run --list shows them)
    wmtui run my-scenario.toml --dataset synthetic --epochs 1 --out runs/demo

Training flags (``--dataset``, ``--epochs``, ``--device`` ...) override the scenario's
``[train]`` table for every phase. The run folder holds the whole stream
(``events.jsonl``, which ``wmtui replay`` plays), ``summary.json`` with every phase's
headline numbers, and one folder per phase (``01-embed/``, ``02-gan/``) written exactly as the
single-phase commands write theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.config import TrainConfig
from engine.errors import ConfigError
from engine.jobs.common import check_config
from engine.studies.scenario_runner import prepare_scenario
from engine.studies.scenarios import load_scenario, preset_names
from engine.threads import apply_threads
from wmtui.cli.common import JsonFlag, ThreadsOption
from wmtui.cli.options import listing, with_dataclass_options

COMMAND = "run"


def register(app: typer.Typer) -> None:
    """Add ``run`` to ``app``; a second call is a no-op."""
    if any(info.name == COMMAND for info in app.registered_commands):
        return
    from wmtui.cli.common import guarded

    app.command(COMMAND)(guarded(with_dataclass_options(TrainConfig)(run)))


def describe_presets() -> str:
    lines = []
    for name in preset_names():
        scenario = load_scenario(name)
        phases = " -> ".join(spec.label() for spec in scenario.phases)
        lines += listing(name, scenario.title, 11) + listing("", phases, 11)
    return "\n".join(lines)


def run(
    given: dict[str, str],
    scenario: Annotated[
        str | None,
        typer.Argument(metavar="SCENARIO", help="preset name or TOML file (see --list)"),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="list the preset scenarios")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="run folder (default: runs/<scenario>-<time>)")
    ] = None,
    json_mode: JsonFlag = False,
    threads: ThreadsOption = None,
) -> None:
    """Run a scenario headless: the playground's phases, events and summary, no screen."""
    from wmtui.cli.common import default_out, run_headless

    if list_:
        typer.echo(describe_presets())
        raise typer.Exit(0)
    if scenario is None:
        raise ConfigError(f"name a scenario: {', '.join(preset_names())} or a TOML file")
    note = apply_threads(threads)
    chosen = load_scenario(scenario)
    config = check_config(chosen.config(given))
    job, root, sinks = prepare_scenario(chosen, config, out or default_out(chosen.name))
    raise typer.Exit(run_headless(job, root, json_mode, sinks, note=note))
