"""Running a scenario: its phases in order on one session, one run folder per phase.

Split from :mod:`engine.studies.scenarios` (which reads and checks the file) so that each has
one job. ``resume`` keeps the phases an earlier run completed: recipes and interrupted runs
pick up where they stopped without training anything twice.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine import commands as cmd
from engine.config import TrainConfig
from engine.errors import ConfigError, RunError, UserError
from engine.events import Event, Phase
from engine.runs import RunDir
from engine.session import Job, JobContext, StopRequested
from engine.studies.data_checks import check_scenario_data
from engine.studies.scenarios import PhaseSpec, Scenario


class PhaseRouter:
    """The session sink that also records each event into the current phase's run folder."""

    def __init__(self) -> None:
        self.current: Callable[[Event], None] | None = None

    def __call__(self, event: Event) -> None:
        if self.current is not None:
            self.current(event)


def phase_folder(root: Path, index: int, spec: PhaseSpec) -> Path:
    return root / f"{index:02d}-{spec.name}"


def scenario_manifest(scenario: Scenario, config: TrainConfig) -> dict[str, Any]:
    return {"command": "scenario", "scenario": scenario.to_dict(), "config": config.to_dict()}


def prepare_scenario(
    scenario: Scenario, config: TrainConfig, out: Path, resume: bool = False
) -> tuple[Job, RunDir, list[Callable[[Event], None]]]:
    """The job, its root run folder and the sinks a session for it needs (the root's
    ``events.jsonl`` is the caller's, the router for the phases' is in the list).
    ``resume`` reuses ``out``: phases whose folders completed are not run again. Every
    phase is checked against its dataset first: a refused file leaves no folder."""
    check_scenario_data(scenario, config)
    root = RunDir.create(out, scenario_manifest(scenario, config), overwrite=resume)
    router = PhaseRouter()
    return scenario_job(scenario, config, root, router, resume), root, [router]


def scenario_job(
    scenario: Scenario,
    config: TrainConfig,
    root: RunDir,
    router: PhaseRouter,
    resume: bool = False,
) -> Job:
    """Run the phases in order on one context; ``SkipPhase`` ends the current one early (its
    model is kept, as with Stop) and goes on; ``SetPhaseParams`` edits a phase not yet begun.

    ``root`` holds the whole stream (``events.jsonl``), the manifest and ``summary.json``;
    each phase writes its own run folder ``NN-name/`` exactly as the headless command would.
    """

    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        summary: dict[str, Any] = {"scenario": scenario.name, "run": str(root.path), "phases": []}
        ctx.log(f"scenario {scenario.name}: {scenario.title}")
        try:
            _run_phases(ctx, scenario, config, root, router, summary["phases"], resume)
            summary["status"] = "completed"
        except StopRequested:
            summary["status"] = "stopped"
            raise
        except BaseException as exc:
            summary |= {"status": "failed", "error": str(exc).splitlines()[0] if str(exc) else ""}
            raise
        finally:  # a stopped or failed scenario still says how far it got
            summary["seconds"] = round(time.monotonic() - started, 2)
            root.write_summary(summary)
        return summary

    return job


def _run_phases(
    ctx: JobContext,
    scenario: Scenario,
    config: TrainConfig,
    root: RunDir,
    router: PhaseRouter,
    results: list[dict[str, Any]],
    resume: bool = False,
) -> None:
    total = len(scenario.phases)
    folders: dict[str, Path] = {}
    for index, spec in enumerate(scenario.phases, 1):
        ctx.reset_handlers()
        ctx.skippable = index < total
        ctx.on(cmd.SetPhaseParams, _phase_editor(scenario, index))
        folder = phase_folder(root.path, index, spec)
        info = {
            "scenario": scenario.name,
            "title": spec.title or spec.label(),
            "kind": spec.kind,
            "plugin": spec.plugin,
            "run": str(folder),
        }
        entry = {"name": spec.name, "kind": spec.kind, "plugin": spec.plugin, "run": str(folder)}
        ctx.emit(Phase(spec.name, "start", index=index, total=total, info=info))
        done = completed_summary(folder, spec) if resume else None
        if done is not None:
            ctx.log(f"phase {spec.name}: completed in an earlier run, kept ({folder})")
            folders[spec.name] = folder
            entry |= {"status": "completed", "resumed": True}
            entry |= {k: done[k] for k in HEADLINE if k in done}
            results.append(entry)
            ctx.emit(Phase(spec.name, "end", index=index, total=total, info={**info, **entry}))
            continue
        phase_job, run = _build_phase(spec, config, scenario, folder, folders, resume)
        sink = run.event_sink()
        router.current = sink
        result: dict[str, Any] = {}
        try:
            result = phase_job(ctx) or {}
            entry["status"] = "completed"
        except StopRequested:
            if not ctx.skip_requested:
                results.append({**entry, "status": "stopped"})
                raise
            ctx.skip_requested = ctx.stop_requested = False
            entry["status"] = "skipped"
        except BaseException:
            results.append({**entry, "status": "failed"})
            raise
        finally:
            router.current = None
            sink.close()
        folders[spec.name] = folder
        entry |= {k: result[k] for k in HEADLINE if k in result}
        results.append(entry)
        ctx.emit(Phase(spec.name, "end", index=index, total=total, info={**info, **entry}))


#: what a phase's summary contributes to the scenario's
HEADLINE = (
    "test_acc",
    "retention",
    "test_acc_before",
    "retention_before",
    "flagged_class",
    "anomaly_index",
    "perturbation_sizes",
    "verified",
    "removed",
    "kept_accuracy",
    "wm_accuracy",
    "cost",
)


def completed(folder: Path) -> dict[str, Any] | None:
    """The summary of a run folder whose run completed, else None (missing, corrupt, cut)."""
    try:
        summary = RunDir(folder).summary()
    except (UserError, OSError):
        return None
    return summary if isinstance(summary, dict) and summary.get("status") == "completed" else None


def trial_summary(folder: Path, scenario: Scenario) -> dict[str, Any] | None:
    """A trial's scenario summary when it and every phase's folder completed, else None
    (recipes and sweeps both decide with it whether a trial is done)."""
    summary = completed(folder)
    if summary is None:
        return None
    for index, spec in enumerate(scenario.phases, 1):
        if completed_summary(phase_folder(folder, index, spec), spec) is None:
            return None
    return summary


class TrialRouter:
    """The session sink: each event into the running trial's stream and its phase's."""

    def __init__(self) -> None:
        self.trial: Callable[[Event], None] | None = None
        self.phases = PhaseRouter()

    def __call__(self, event: Event) -> None:
        if self.trial is not None:
            self.trial(event)
        self.phases(event)


def completed_summary(folder: Path, spec: PhaseSpec) -> dict[str, Any] | None:
    """The summary of a phase folder an earlier run completed (with its model, where the
    phase makes one), else None: anything less is run again from its start."""
    summary = completed(folder)
    if summary is None:
        return None
    if spec.makes_model and not (folder / "model.safetensors").is_file():
        return None
    return summary


def _phase_editor(scenario: Scenario, current: int) -> Callable[[cmd.SetPhaseParams], str]:
    def edit(command: cmd.SetPhaseParams) -> str:
        names = [p.name for p in scenario.phases]
        spec = scenario.phase(command.phase)
        position = names.index(spec.name) + 1
        if position <= current:
            raise ConfigError(f"phase {spec.name!r} has already started")
        field = "budget" if command.budget else "params"
        candidate = dataclasses.replace(spec, **{field: {**getattr(spec, field), **command.values}})
        candidate.parsed_params()
        candidate.parsed_budget()
        setattr(spec, field, getattr(candidate, field))
        shown = ", ".join(f"{k}={v}" for k, v in command.values.items())
        return f"phase {spec.name}: {field} set ({shown})"

    return edit


def _build_phase(
    spec: PhaseSpec,
    config: TrainConfig,
    scenario: Scenario,
    folder: Path,
    done: dict[str, Path],
    overwrite: bool = False,
) -> tuple[Job, RunDir]:
    """The phase's job and its run folder, checked and built as the headless command would
    (created now, not at load: an attack's manifest reads the run it attacks, which exists
    only once that phase ran)."""
    source = None
    if not spec.makes_model_from_scratch:
        source = done.get(spec.on)
        if source is None or not (source / "model.safetensors").is_file():
            raise RunError(f"phase {spec.name}: phase {spec.on!r} left no model to work on")
    job_spec = spec.job_spec(config, source, folder, scenario.name)
    built = dataclasses.replace(job_spec, overwrite=overwrite).build()
    assert built.run is not None
    return built.job, built.run
