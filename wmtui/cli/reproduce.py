"""``wmtui reproduce NAME``: a paper's headline table, re-run and set beside the paper's.

    wmtui reproduce --list                      # every recipe, its scales and last result
    wmtui reproduce gan --check                 # quick scale; exit 1 if a cell is off
    wmtui reproduce refit --scale paper --device cuda --out runs/refit-paper
    wmtui reproduce sok --workers 2                    # two phases at once, local processes
    wmtui reproduce sok --backend ray --address HEAD:6379 --cache /shared/phases

The trials run headless through the same jobs and sessions as ``wmtui run`` (``--tui``
watches them in the playground); ``OUT/recipe.json`` keeps the table. Running the same
command again resumes: every phase whose folder in the phase cache completed is kept, and
a phase shared by many trials (one embedding, thirty attacks) is computed once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from engine.errors import ConfigError
from engine.studies.recipe_file import SCALES, Recipe, load_recipe, recipe_names
from engine.studies.recipe_records import check_target, write_records
from engine.studies.recipe_workers import RunOptions
from engine.studies.recipes import (
    RecipeRun,
    compute_seconds,
    load_result,
    plan,
    prepare_recipe,
    suggest_expectations,
    trial_statuses,
    write_result,
)
from engine.threads import apply_threads
from wmtui.cli.common import JsonFlag, StudyDeviceOption, ThreadsOption, guarded
from wmtui.cli.reproduce_check import check_code, comparison_table, duration, matrix_text

COMMAND = "reproduce"


def register(app: typer.Typer) -> None:
    if any(info.name == COMMAND for info in app.registered_commands):
        return
    app.command(COMMAND)(guarded(reproduce))


def default_out(name: str, scale: str) -> Path:
    """A fixed folder per recipe and scale, so that re-running resumes and --list finds it."""
    return Path("runs") / "reproduce" / f"{name}-{scale}"


def reproduce(
    name: Annotated[
        str | None, typer.Argument(metavar="NAME", help="recipe name or TOML file (see --list)")
    ] = None,
    scale: Annotated[
        str,
        typer.Option(
            "--scale",
            help="quick (CPU, minutes), paper (the paper's setup) or standard (the whole grid)",
        ),
    ] = "quick",
    check: Annotated[
        bool, typer.Option("--check", help="exit 1 when a cell's regression check fails")
    ] = False,
    device: StudyDeviceOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="folder (default: runs/reproduce/NAME-SCALE)")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="list the recipes")] = False,
    tui: Annotated[bool, typer.Option("--tui", help="watch the trials in the playground")] = False,
    no_run: Annotated[
        bool, typer.Option("--no-run", help="only compare what OUT already holds")
    ] = False,
    suggest: Annotated[
        bool, typer.Option("--suggest", help="print regression records and paper verdicts")
    ] = False,
    suggest_into: Annotated[
        Path | None,
        typer.Option("--suggest-into", help="write a copy of the recipe with the records in"),
    ] = None,
    json_mode: JsonFlag = False,
    threads: ThreadsOption = None,
    workers: Annotated[
        int,
        typer.Option("--workers", metavar="N", help="phases at once (1: in this process)"),
    ] = 1,
    backend: Annotated[
        str, typer.Option("--backend", help="local (worker processes) or ray (Ray tasks)")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", metavar="ADDR", help="existing Ray cluster (--backend ray)"),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option("--cache", metavar="DIR", help="phase cache to share (default: OUT/phases)"),
    ] = None,
) -> None:
    """Re-run a paper's headline result and set our numbers beside the paper's."""
    if list_:
        typer.echo(json.dumps(list_rows()) if json_mode else describe_recipes())
        raise typer.Exit(0)
    if name is None:
        raise ConfigError(f"name a recipe: {', '.join(recipe_names())} or a TOML file")
    if scale not in SCALES:
        raise ConfigError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    recipe = load_recipe(name)
    if suggest_into is not None:
        check_target(suggest_into)
    options = RunOptions(backend, workers, threads if workers > 1 else None, address)
    options.check()  # before anything is written
    overrides = {"device": device} if device else {}
    run = plan(recipe, scale, out or default_out(recipe.name, scale), overrides, cache)
    if no_run and tui and recipe.matrix is not None:
        # watch a run made elsewhere (wmtui serve): a watcher reads, never writes recipe.json
        from wmtui.tui.matrix_app import watch_matrix

        watch_matrix(run.out, recipe.matrix, recipe.title, planned=planned_cells(recipe))
        result = load_result(run.out) or write_result(run, trial_statuses(run), 0.0)
    elif no_run:
        result = write_result(run, trial_statuses(run), 0.0)
    else:
        note = apply_threads(threads) if workers == 1 and backend == "local" else ""
        code, result = _run(run, json_mode, tui, note, options)
        if code != 0:
            raise typer.Exit(code)
    if json_mode:
        typer.echo(json.dumps({"event": "recipe", **result}))
    else:
        typer.echo(comparison_table(result))
        if recipe.matrix is not None:
            typer.echo("\n" + matrix_text(result, recipe.matrix))
    if suggest:
        typer.echo("\n".join(suggest_expectations(result)))
    if suggest_into is not None:
        count = write_records(recipe, result, suggest_into)
        typer.echo(f"wrote {suggest_into}: {count} cell(s) with a regression record", err=True)
    if check:
        raise typer.Exit(check_code(result))


def _run(
    run: RecipeRun, json_mode: bool, tui: bool, note: str, options: RunOptions
) -> tuple[int, dict[str, Any]]:
    from wmtui.cli.common import run_headless

    job, root, sinks = prepare_recipe(run, options)
    code = (
        _watch(job, root, sinks, note, run)
        if tui
        else run_headless(job, root, json_mode, sinks, note=note)
    )
    result = load_result(run.out) or {}
    return code, result


def _watch(job: Any, root: Any, sinks: list[Any], note: str, run: RecipeRun) -> int:
    """The trials in the playground: the dashboard follows the phases of each in turn; a
    recipe with a ``[matrix]`` shows it filling instead (Enter: a cell's trials)."""
    from engine.session import Session
    from wmtui.tui.app import WmtuiApp

    session = Session(job, [root.event_sink(), *sinks])
    session.ctx.log(note)
    if run.recipe.matrix is not None:
        from wmtui.tui.matrix_app import watch_running

        matrix, title = run.recipe.matrix, run.recipe.title
        return watch_running(session, run.out, matrix, title, planned_cells(run.recipe))
    app_ = WmtuiApp(lambda: session, refresh=2.0, run_path=root.path)
    app_.run()
    if app_.exit_message:
        typer.echo(app_.exit_message, err=True)
    session.join(2.0)
    return {"completed": 0, "stopped": 130}.get(session.status or "", 1)


def planned_cells(recipe: Recipe) -> list[dict[str, Any]]:
    """The recipe's cells as a result names them: the matrix view's layout before any."""
    return [{"name": cell.name, "table": cell.table} for cell in recipe.cells]


def list_rows() -> list[dict[str, Any]]:
    rows = []
    for name in recipe_names():
        recipe = load_recipe(name)
        for scale, spec in recipe.scales.items():
            last = load_result(default_out(name, scale))
            rows.append(
                {
                    "recipe": name,
                    "title": recipe.title,
                    "status": recipe.status,
                    "pending": recipe.pending,
                    "scale": scale,
                    "train": recipe.scale_train(scale),
                    "minutes": spec.minutes,
                    "last": _last_summary(last),
                }
            )
    return rows


def _last_summary(result: dict[str, Any] | None) -> str:
    if result is None:
        return "not run here"
    checked = [c for c in result.get("cells", []) if c.get("ok") is not None]
    held = sum(bool(c["ok"]) for c in checked)
    state = "passed" if result.get("passed") else "not passed"
    took = duration(compute_seconds(result))
    return f"{state} ({result.get('scale')}): {held}/{len(checked)} cells hold, phases took {took}"


def describe_recipes() -> str:
    lines = ["| recipe | scale | setup | est. time (2 CPU cores) | last result here |"]
    lines.append("|---|---|---|---|---|")
    for row in list_rows():
        train = row["train"]
        setup = f"{train.get('dataset', 'auto')} + {train.get('model', 'lenet5')}"
        if row["status"] == "pending":
            if row["scale"] == SCALES[0]:  # one line says it for every scale
                lines.append(f"| {row['recipe']} | - | - | - | pending: {row['pending']} |")
            continue
        time_text = f"{row['minutes']:.0f} min" if row["scale"] != "paper" else "GPU"
        lines.append(
            f"| {row['recipe']} | {row['scale']} | {setup} | {time_text} | {row['last']} |"
        )
    return "\n".join(lines)
