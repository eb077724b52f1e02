"""One sweep trial, run wherever a backend puts it: a local worker process or a Ray actor.

A trial travels as a *payload* of plain values (the resolved scenario mapping, the train
config, the folder, the thread count) and is rebuilt and checked again where it runs: nothing
but JSON crosses a process or a machine. It runs as a recipe trial does
(:func:`engine.studies.scenario_runner.trial_summary` decides whether it is done; the scenario runs
with ``resume``, so the phases an interrupted attempt completed are kept) and answers with
its results row.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from engine.config import TrainConfig
from engine.errors import UserError
from engine.runs import RunDir
from engine.session import Session
from engine.studies.grid import point_label
from engine.studies.phase_run import run_to_end, run_trial_phases
from engine.studies.scenario_runner import (
    TrialRouter,
    scenario_job,
    scenario_manifest,
    trial_summary,
)
from engine.studies.scenarios import scenario_from_mapping
from engine.studies.sweep_results import Row, trial_row
from engine.studies.sweeps import SweepPlan, SweepTrial

Payload = dict[str, Any]


def payload(plan: SweepPlan, trial: SweepTrial, threads: int) -> Payload:
    """What a worker needs to run ``trial`` (plain values only)."""
    return {
        "key": trial.key,
        "point": trial.point,
        "raw": trial.raw,
        "name": plan.grid.name,
        "source": plan.grid.source,
        "config": trial.config.to_dict(),
        "folder": str(plan.folder(trial).resolve()),
        "threads": threads,
        "cache": str(plan.cache.resolve()) if plan.cache is not None else None,
    }


def rebuild(data: Payload) -> SweepTrial:
    scenario = scenario_from_mapping(data["raw"], data["name"], data["source"])
    config = TrainConfig.from_mapping(data["config"])
    return SweepTrial(data["key"], dict(data["point"]), data["raw"], scenario, config)


def set_threads(count: int) -> None:
    """torch's intra-op threads for this process (a worker's share of the cores)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(count)
    torch.set_num_threads(count)


def run_payload(data: Payload) -> Row:
    """Run one trial to its end and return its row. An interrupt (KeyboardInterrupt: the
    driver's SIGTERM) stops the trial between steps, lets it write its summary and
    re-raises: the trial is resumed by the next run. Call it from the main thread when it
    should be interruptible (a Ray actor's thread is stopped by Ray instead)."""
    started = time.monotonic()
    trial = rebuild(data)
    folder = Path(data["folder"])
    summary = trial_summary(folder, trial.scenario)
    if summary is not None:
        return trial_row(trial, "completed", summary)
    if data.get("cache"):  # its phases through the shared cache, each computed once
        summary, error = run_trial_phases(
            trial.key, trial.scenario, trial.config, folder, Path(data["cache"]), data["threads"]
        )
        seconds = round(time.monotonic() - started, 2)
        if summary is not None:
            return trial_row(trial, "completed", summary, seconds=seconds)
        return trial_row(trial, "failed", error=error, seconds=seconds)
    root = RunDir.create(folder, scenario_manifest(trial.scenario, trial.config), overwrite=True)
    router = TrialRouter()
    sink = root.event_sink()
    router.trial = sink
    job = scenario_job(trial.scenario, trial.config, root, router.phases, resume=True)
    session = Session(job, [router])
    session.ctx.log(f"sweep trial {trial.key}: {point_label(trial.point)}")
    run_to_end(session, sink)
    seconds = round(time.monotonic() - started, 2)
    if session.status == "completed":
        return trial_row(trial, "completed", trial_summary(folder, trial.scenario), seconds=seconds)
    return trial_row(trial, "failed", session.summary, error=_error(session), seconds=seconds)


def _error(session: Session) -> str:
    """The first line of the failure (a bug's traceback stays in the trial's events)."""
    error = session.error
    if error is None:
        return f"trial {session.status}"
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}"
