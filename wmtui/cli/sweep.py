"""``wmtui sweep GRID``: a grid of trials, locally or on Ray, resumable.

    wmtui sweep minimal                                       # local, one worker per core
    wmtui sweep refit --workers 2 --out runs/sweeps/refit     # a preset, by name
    wmtui sweep refit --backend ray --address HEAD:6379       # an existing Ray cluster
    wmtui sweep refit --dry-run                               # the trials and what is done
    wmtui sweep --list                                        # the preset grids

Every trial writes an ordinary run folder under ``OUT/trials/<key>/``; ``OUT/results.csv``,
``results.jsonl`` and ``summary.json`` (mean ± std over seeds per configuration) are
rewritten after every trial. Running the same command again resumes: completed trials are
kept, failed and interrupted ones run again. Bad grids fail before anything runs (exit 2);
a sweep with failed trials exits 1, an interrupted one 130.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import IO, Annotated, Any

import typer

from engine.errors import ConfigError
from wmtui.cli.flags import JsonFlag, StudyDeviceOption

COMMAND = "sweep"
DEVICES = ("auto", "cpu", "cuda")


def register(app: typer.Typer) -> None:
    """Add ``sweep`` to ``app``; a second call is a no-op."""
    if any(info.name == COMMAND for info in app.registered_commands):
        return
    from wmtui.cli.common import guarded

    app.command(COMMAND)(guarded(sweep))


def default_out(name: str) -> Path:
    """A fixed folder per grid, so that running the same command again resumes."""
    return Path("runs") / "sweeps" / name


def sweep(
    grid: Annotated[
        str | None,
        typer.Argument(metavar="GRID", help="grid TOML file, or a preset name (see --list)"),
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="list the preset grids")] = False,
    backend: Annotated[
        str, typer.Option("--backend", help="local (worker processes) or ray (Ray Tune)")
    ] = "local",
    workers: Annotated[
        int | None,
        typer.Option("--workers", metavar="N", help="trials at once (local default: one per core)"),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", metavar="ADDR", help="existing Ray cluster (ray start --head)"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="sweep folder (default: runs/sweeps/GRID)")
    ] = None,
    device: StudyDeviceOption = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", metavar="N", help="torch threads per trial (default: cores / workers)"
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="list the trials and which are done; run nothing")
    ] = False,
    tui: Annotated[
        bool,
        typer.Option("--tui", help="watch the trials live; Enter replays one, q stops"),
    ] = False,
    json_mode: JsonFlag = False,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache", metavar="DIR", help="phase cache shared with recipes (each phase once)"
        ),
    ] = None,
) -> None:
    """Run a grid of trials (a scenario over axes), resumable, locally or on Ray."""
    from engine.studies.sweep_backends import BACKENDS, run_sweep
    from engine.studies.sweeps import grid_names, load_grid, plan_sweep

    if list_:
        typer.echo(json.dumps(list_rows()) if json_mode else describe_grids())
        raise typer.Exit(0)
    if grid is None:
        raise ConfigError(f"name a sweep grid: {', '.join(grid_names())} or a TOML file")
    _check_options(backend, workers, threads, device, address, BACKENDS)
    loaded = load_grid(grid)
    overrides = {"device": device} if device else {}
    plan = plan_sweep(loaded, out or default_out(loaded.name), overrides, cache)
    if dry_run:
        _dry_run(plan, json_mode)
        return
    if tui:
        raise typer.Exit(
            _watch_live(plan.out, grid, backend, workers, address, device, threads, cache)
        )
    if threading.current_thread() is threading.main_thread():
        # Ctrl-C stops the sweep cleanly, even where the shell started it ignoring SIGINT
        signal.signal(signal.SIGINT, signal.default_int_handler)
    reporter = SweepReporter(json_mode, len(plan.trials))
    try:
        outcome = run_sweep(plan, backend, workers, threads, address, reporter)
    finally:
        reporter.close()
    _finish(outcome, plan, json_mode)
    raise typer.Exit({"completed": 0, "stopped": 130}.get(outcome.status, 1))


def list_rows() -> list[dict[str, Any]]:
    """Each preset grid with its trial count: loading a grid checks every trial, so a preset
    that no longer builds shows up here rather than after a long run."""
    from engine.studies.sweeps import grid_names, load_grid

    rows = []
    for name in grid_names():
        loaded = load_grid(name)
        rows.append({"grid": name, "title": loaded.title, "trials": len(loaded.trials)})
    return rows


def describe_grids() -> str:
    from wmtui.cli.options import listing

    lines = []
    for row in list_rows():
        lines += listing(row["grid"], f"{row['title']} ({row['trials']} trials)", 12)
    return "\n".join(lines)


def _watch_live(
    out: Path,
    grid: str,
    backend: str,
    workers: int | None,
    address: str | None,
    device: str | None,
    threads: int | None,
    cache: Path | None = None,
) -> int:
    """The sweep in a child process (the same command, headless, its lines in
    ``OUT/sweep.log``) while the browser shows its trials live; quitting stops it."""
    import subprocess

    from wmtui.tui.sweep_app import browse, results_text

    args = [sys.executable, "-m", "wmtui", "sweep", grid, "--out", str(out), "--backend", backend]
    for flag, value in (
        ("--workers", workers),
        ("--address", address),
        ("--device", device),
        ("--threads", threads),
        ("--cache", cache),
    ):
        if value is not None:
            args += [flag, str(value)]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "sweep.log", "ab") as log:
        driver = subprocess.Popen(
            args,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # the terminal's keys are the browser's, not the driver's
        )
    from wmtui.signals import on_stop_signal

    def pass_on(name: str) -> bool:  # its own session: SIGTERM/SIGHUP must be passed on
        if driver.poll() is None:
            driver.send_signal(signal.SIGTERM)  # it stops its trials cleanly by itself
        return False

    disarm = on_stop_signal(pass_on)
    try:
        code = browse(out, driver=driver)
    finally:
        disarm()
    typer.echo(results_text(out))  # the screen's table is gone: the results stay in view
    return {0: 0, None: 1}.get(code, 130 if code in (-2, 130) else 1)


def _check_options(
    backend: str,
    workers: int | None,
    threads: int | None,
    device: str | None,
    address: str | None,
    backends: tuple[str, ...],
) -> None:
    from engine.errors import unknown_name

    if backend not in backends:
        raise unknown_name("backend", backend, backends)
    if workers is not None and not 1 <= workers <= 1024:
        raise ConfigError(f"--workers must be between 1 and 1024, got {workers}")
    if threads is not None and not 1 <= threads <= 1024:
        raise ConfigError(f"--threads must be between 1 and 1024, got {threads}")
    if device is not None and device not in DEVICES:
        raise unknown_name("device", device, DEVICES)
    if address and backend != "ray":
        raise ConfigError("--address is for --backend ray")


def _dry_run(plan: Any, json_mode: bool) -> None:
    from engine.studies.sweep_results import completed_row

    for trial in plan.trials:
        done = completed_row(plan, trial) is not None
        row = {"event": "trial", "trial": trial.key, "point": trial.point, "done": done}
        if json_mode:
            typer.echo(json.dumps(row))
        else:
            typer.echo(f"{trial.key}  {'done   ' if done else 'to run '} {trial.label}")
    if not json_mode:
        typer.echo(f"{len(plan.trials)} trials into {plan.out}", err=True)


def _finish(outcome: Any, plan: Any, json_mode: bool) -> None:
    from engine.studies.sweep_results import summary_table

    summary = outcome.summary
    if json_mode:
        typer.echo(json.dumps({"event": "sweep", "status": outcome.status, **summary}))
        return
    typer.echo(summary_table(summary))
    where = f"results in {plan.out}/results.csv, summary.json"
    if outcome.status == "stopped":
        typer.echo(f"interrupted: run the same command again to resume ({where})", err=True)
    elif outcome.status != "completed":
        typer.echo(f"{summary['failed']} trial(s) failed: see the error column ({where})", err=True)
    else:
        typer.echo(where, err=True)


class SweepReporter:
    """Sweep progress: JSON lines on stdout (``--json``), a Rich bar on a terminal (done,
    running, failed, ETA), else one plain line per trial on stderr."""

    def __init__(self, json_mode: bool, total: int, err: IO[str] | None = None) -> None:
        self.json_mode = json_mode
        self.err = err or sys.stderr
        #: the stdout of now: Ray's backend sends stdout to stderr while Tune runs (its
        #: tables), and the JSON lines must still reach stdout
        self.out = sys.stdout
        self.total = total
        self.started = time.monotonic()
        self.kept = 0
        self.finished_here = 0
        self._kept_said = False
        self._progress: Any = None
        self._task: Any = None
        if self.err.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("sweep"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} done"),
                TextColumn("{task.fields[state]}"),
                TimeRemainingColumn(),
                console=Console(file=self.err),
            )
            self._progress.start()
            self._task = self._progress.add_task("sweep", total=total, state="")

    def say(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.err, flush=True)

    def __call__(self, event: Any) -> None:
        if self.json_mode:
            print(json.dumps(event.to_dict()), file=self.out, flush=True)
        if event.kind == "kept":
            self.kept += 1
        else:
            self._say_kept()
        if event.kind in ("completed", "failed"):
            self.finished_here += 1
        if self._progress is not None:
            self._update(event)
        elif event.kind != "kept":
            self.say(self._line(event))

    def _update(self, event: Any) -> None:
        state = f"{event.running} running, {event.failed} failed"
        self._progress.update(self._task, completed=event.done, state=state)
        if event.kind in ("failed", "stopped", "note"):
            self.say(self._line(event))

    def _line(self, event: Any) -> str:
        if event.kind == "note":
            return event.message
        label = event.trial.label if event.trial else ""
        head = f"[{event.done}/{event.total}] {event.kind} {event.trial.key} {label}".rstrip()
        if event.kind == "completed":
            took = f" in {event.row['seconds']:.1f} s" if event.row.get("seconds") else ""
            return f"{head}{took}{self._eta(event)}"
        if event.kind in ("failed", "stopped"):
            return f"{head}: {event.row['error']}" if event.row else head
        return head

    def _eta(self, event: Any) -> str:
        """Time left at this run's pace (trials kept from an earlier run are not counted)."""
        left = event.total - event.done - event.failed
        if not self.finished_here or left <= 0:
            return ""
        seconds = (time.monotonic() - self.started) / self.finished_here * left
        return (
            f", about {seconds / 60:.1f} min left" if seconds >= 90 else f", ~{seconds:.0f} s left"
        )

    def _say_kept(self) -> None:
        """One line for the trials an earlier run completed (not one line each)."""
        if self.kept and not self._kept_said:
            self._kept_said = True
            self.say(f"{self.kept} trial(s) completed in an earlier run: kept, not run again")

    def close(self) -> None:
        self._say_kept()
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
