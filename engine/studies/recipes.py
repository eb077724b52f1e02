"""Running a recipe and checking it: every trial as a scenario, every cell against its paper.

``wmtui reproduce NAME`` builds a :class:`RecipeRun` (the trials of the chosen scale, each an
ordinary scenario folder under ``OUT/trials/``), runs it as one session job and writes
``OUT/recipe.json``: per cell the paper's number, our mean ± sd over the trials the cell
covers, the expected mean and tolerance, and whether it holds. Re-running the same command
resumes: trials whose folders completed are read, not run, and a trial cut short keeps the
phases it finished.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.config import TrainConfig
from engine.errors import ConfigError, RunError
from engine.events import Event
from engine.runs import RunDir, atomic_write_json, read_json
from engine.session import Job, JobContext, StopRequested
from engine.studies.data_checks import check_trials_data
from engine.studies.grid import expand, point_label, trial_key
from engine.studies.recipe_check import (  # the comparing side, imported back for callers
    cell_result as cell_result,
)
from engine.studies.recipe_check import compare
from engine.studies.recipe_check import lookup as lookup
from engine.studies.recipe_check import measure as measure
from engine.studies.recipe_check import suggest_expectations as suggest_expectations
from engine.studies.recipe_file import Recipe
from engine.studies.scenario_runner import (
    PhaseRouter,
    completed,
    completed_summary,
    phase_folder,
    scenario_job,
    scenario_manifest,
)
from engine.studies.scenarios import Scenario

RESULT_FILE = "recipe.json"
TRIALS = "trials"


@dataclasses.dataclass(frozen=True)
class Trial:
    arm: str
    point: dict[str, Any]
    scenario: Scenario
    config: TrainConfig
    key: str

    @property
    def folder_name(self) -> str:
        return f"{self.arm}-{self.key}"


@dataclasses.dataclass(frozen=True)
class RecipeRun:
    recipe: Recipe
    scale: str
    trials: list[Trial]
    out: Path

    def trial_folder(self, trial: Trial) -> Path:
        """Where a trial's scenario folder lives (the one place that knows the layout)."""
        return self.out / TRIALS / trial.folder_name


def plan(
    recipe: Recipe, scale: str, out: Path, overrides: Mapping[str, Any] | None = None
) -> RecipeRun:
    """The trials of ``scale``: one per arm and grid point; ``overrides`` (``device``,
    ``data_dir``) apply to every trial and do not change its key."""
    if recipe.status == "pending":
        raise ConfigError(f"recipe {recipe.name} is pending: {recipe.pending}")
    if scale not in recipe.scales:
        raise ConfigError(
            f"recipe {recipe.name} has no scale {scale!r}; it has {', '.join(recipe.scales)}"
        )
    trials = []
    for arm in recipe.arms:
        for point in expand(recipe.axes(arm, scale), arm.exclude, f"{recipe.name} {arm.name}"):
            scenario = recipe.scenario(arm, scale, point)
            config = scenario.config({"seed": point.get("seed", 0)})
            resolved = {
                "arm": arm.name,
                "point": point,
                "train": config.to_dict() | {"device": "", "data_dir": ""},
                "phases": [p.to_dict() for p in scenario.phases],
            }
            config = TrainConfig.from_mapping({**config.to_dict(), **(overrides or {})})
            trials.append(Trial(arm.name, point, scenario, config, trial_key(resolved)))
    check_trials_data((f"{t.arm} {point_label(t.point)}", t.scenario, t.config) for t in trials)
    return RecipeRun(recipe, scale, trials, out)


def trial_summary(folder: Path, scenario: Scenario) -> dict[str, Any] | None:
    """A trial's scenario summary when it and every phase's folder completed, else None."""
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


def prepare_recipe(run: RecipeRun) -> tuple[Job, RunDir, list[Callable[[Event], None]]]:
    """The job, the recipe's own run folder (created, or reused to resume) and its sinks."""
    manifest = {
        "command": "reproduce",
        "recipe": run.recipe.name,
        "scale": run.scale,
        "source": run.recipe.path,
        "config": run.trials[0].config.to_dict() if run.trials else {},
    }
    _check_reusable(run)
    root = RunDir.create(run.out, manifest, overwrite=True)
    router = TrialRouter()
    return recipe_job(run, root, router), root, [router]


def _check_reusable(run: RecipeRun) -> None:
    """Resuming writes over ``out``'s own files: only a folder of this recipe and scale may be
    reused, never another run that happens to be there."""
    try:
        manifest = RunDir(run.out).manifest()
    except RunError:
        if (run.out / "manifest.json").exists():
            raise
        return
    same = (manifest.get("command"), manifest.get("recipe"), manifest.get("scale"))
    if same != ("reproduce", run.recipe.name, run.scale):
        raise RunError(
            f"{run.out} holds another run ({manifest.get('command')} "
            f"{manifest.get('recipe', '')} {manifest.get('scale', '')}); choose another --out"
        )


def recipe_job(run: RecipeRun, root: RunDir, router: TrialRouter) -> Job:
    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        statuses: dict[str, str] = {}
        ctx.log(f"recipe {run.recipe.name} ({run.scale}): {len(run.trials)} trials")
        try:
            for number, trial in enumerate(run.trials, 1):
                statuses[trial.key] = _run_trial(ctx, run, trial, number, router)
                write_result(run, statuses, time.monotonic() - started, root)
        except StopRequested:
            write_result(run, statuses, time.monotonic() - started, root)
            raise
        return write_result(run, statuses, time.monotonic() - started, root)

    return job


def _run_trial(
    ctx: JobContext, run: RecipeRun, trial: Trial, number: int, router: TrialRouter
) -> str:
    folder = run.out / TRIALS / trial.folder_name
    what = f"trial {number}/{len(run.trials)}: {trial.arm} {point_label(trial.point)}"
    if trial_summary(folder, trial.scenario) is not None:
        ctx.log(f"{what}: completed in an earlier run, kept")
        return "completed"
    ctx.log(what)
    trial_root = RunDir.create(
        folder, scenario_manifest(trial.scenario, trial.config), overwrite=True
    )
    sink = trial_root.event_sink()
    router.trial = sink
    try:
        summary = scenario_job(trial.scenario, trial.config, trial_root, router.phases, True)(ctx)
    except StopRequested:
        return "stopped"
    finally:
        router.trial = None
        sink.close()
    return str(summary.get("status", "completed"))


# -- reading the trials back ---------------------------------------------------------------
def trial_statuses(run: RecipeRun) -> dict[str, str]:
    """What the trials' folders say now (for a check without running)."""
    return {
        t.key: "completed"
        if trial_summary(run.out / TRIALS / t.folder_name, t.scenario)
        else "missing"
        for t in run.trials
    }


def write_result(
    run: RecipeRun, statuses: Mapping[str, str], seconds: float, root: RunDir | None = None
) -> dict[str, Any]:
    """``recipe.json`` (and the run's summary) from the trials' folders as they are now."""
    result = compare(run, statuses)
    result["seconds"] = round(seconds, 1)
    result["trial_seconds"] = round(sum(_trial_seconds(run, t) for t in run.trials), 1)
    atomic_write_json(run.out / RESULT_FILE, result)
    if root is not None:
        root.write_summary({**result, "status": "completed" if result["complete"] else "partial"})
    return result


def _trial_seconds(run: RecipeRun, trial: Trial) -> float:
    """The compute time a trial took when it ran (0 when it has not completed)."""
    summary = trial_summary(run.out / TRIALS / trial.folder_name, trial.scenario)
    return float(summary.get("seconds", 0.0)) if summary else 0.0


def load_result(out: Path) -> dict[str, Any] | None:
    """The last ``recipe.json`` in ``out``, or None."""
    try:
        result = read_json(out / RESULT_FILE, "recipe result")
    except RunError:
        return None
    return result if isinstance(result, dict) else None
