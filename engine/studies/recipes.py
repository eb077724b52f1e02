"""Running a recipe and checking it: every trial as a scenario, every cell against its paper.

``wmtui reproduce NAME`` builds a :class:`RecipeRun` (the trials of the chosen scale, each an
ordinary scenario folder under ``OUT/trials/``), runs it as one session job and writes
``OUT/recipe.json``: per cell the paper's number, our mean ± sd over the trials the cell
covers, the expected mean and tolerance, and whether it holds.

The trials' phases run as one graph of unique phases (:mod:`engine.studies.phase_graph`),
each computed once into the phase cache (``--cache``, default ``OUT/phases``) and linked
from every trial folder that uses it, on this process or on workers
(:mod:`engine.studies.recipe_workers`). Re-running the same command resumes at phase
granularity: every phase whose cache folder completed is kept, whichever trial, recipe or
earlier run computed it.
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
from engine.studies.phase_cache import adopt_trial, default_cache, finish_trial, link_trial
from engine.studies.phase_graph import PhaseGraph, build_graph
from engine.studies.recipe_check import (  # the comparing side, imported back for callers
    cell_result as cell_result,
)
from engine.studies.recipe_check import compare
from engine.studies.recipe_check import lookup as lookup
from engine.studies.recipe_check import measure as measure
from engine.studies.recipe_check import suggest_expectations as suggest_expectations
from engine.studies.recipe_file import Recipe
from engine.studies.recipe_workers import GraphState, RunOptions, Scheduler
from engine.studies.scenario_runner import TrialRouter as TrialRouter
from engine.studies.scenario_runner import trial_summary as trial_summary
from engine.studies.scenarios import Scenario

RESULT_FILE = "recipe.json"
#: seconds between rewrites of ``recipe.json`` while phases end (at least ten times what one
#: rewrite takes: comparing a large matrix reads every trial, and must not slow the run)
RESULT_EVERY = 2.0
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
    #: the phase cache (``--cache``); None: ``OUT/phases``
    cache: Path | None = None

    @property
    def phase_cache(self) -> Path:
        return self.cache if self.cache is not None else default_cache(self.out)

    def graph(self) -> PhaseGraph:
        """The unique phases of every trial, over the phase cache."""
        return build_graph(
            ((t.folder_name, t.scenario, t.config) for t in self.trials), self.phase_cache
        )

    def trial_folder(self, trial: Trial) -> Path:
        """Where a trial's scenario folder lives (the one place that knows the layout)."""
        return self.out / TRIALS / trial.folder_name


def plan(
    recipe: Recipe,
    scale: str,
    out: Path,
    overrides: Mapping[str, Any] | None = None,
    cache: Path | None = None,
) -> RecipeRun:
    """The trials of ``scale``: one per arm and grid point; ``overrides`` (``device``,
    ``data_dir``) apply to every trial and do not change its key; ``cache`` is where their
    phases' outputs live (default ``OUT/phases``)."""
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
    return RecipeRun(recipe, scale, trials, out, cache)


def prepare_recipe(
    run: RecipeRun, options: RunOptions | None = None
) -> tuple[Job, RunDir, list[Callable[[Event], None]]]:
    """The job, the recipe's own run folder (created, or reused to resume) and its sinks;
    ``options`` say where the phases run (default: one after another in this process)."""
    options = options or RunOptions()
    options.check()
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
    return recipe_job(run, root, router, options), root, [router]


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


def recipe_job(
    run: RecipeRun, root: RunDir, router: TrialRouter, options: RunOptions | None = None
) -> Job:
    """Every trial's phases as one graph, each unique phase run once (see the module);
    ``recipe.json`` is rewritten as each phase ends, and each trial's folder gets its
    summary the moment its last phase is done."""
    options = options or RunOptions()

    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        graph = run.graph()
        trials = {t.folder_name: t for t in run.trials}
        ctx.log(f"recipe {run.recipe.name} ({run.scale}): {len(run.trials)} trials")
        moved = sum(
            adopt_trial(run.trial_folder(t), t.scenario, graph, t.folder_name) for t in run.trials
        )
        if moved:
            ctx.log(f"{moved} finished phase folder(s) of earlier trials moved into the cache")

        written = {"at": 0.0, "took": 0.0}

        def settle(state: GraphState, names: list[str], force: bool = True) -> dict[str, Any]:
            for name in names:
                trial = trials[name]
                folder = run.trial_folder(trial)
                link_trial(folder, trial.scenario, trial.config, graph, name)
                if state.trial_done(name):
                    finish_trial(folder, trial.scenario, trial.config, graph, name, state.seconds)
            now = time.monotonic()
            if not force and now - written["at"] < max(RESULT_EVERY, 10 * written["took"]):
                return {}
            statuses = {t.key: state.trial_status(t.folder_name) for t in run.trials}
            result = write_result(run, statuses, now - started, root, state)
            written["at"], written["took"] = time.monotonic(), time.monotonic() - now
            return result

        scheduler = Scheduler(
            ctx,
            graph,
            options,
            router.phases,
            lambda state, outcome: settle(
                state, sorted({t for t, _ in graph.nodes[outcome.key].uses}), force=False
            ),
        )
        settle(scheduler.state, list(trials))
        for number, trial in enumerate(run.trials, 1):
            if scheduler.state.trial_done(trial.folder_name):
                what = f"trial {number}/{len(run.trials)}: {trial.arm} {point_label(trial.point)}"
                ctx.log(f"{what}: completed in an earlier run, kept")
        try:
            state = scheduler.run()
        except StopRequested:
            settle(scheduler.state, [])
            raise
        result = settle(state, list(trials))
        failed = [k for k in graph.nodes if state.status[k] in ("failed", "blocked")]
        if failed:
            first = graph.nodes[failed[0]]
            raise RunError(
                f"{len(failed)} phase(s) failed or could not run; first: {first.label} "
                f"({state.errors.get(first.key, 'failed')}); rerun to retry them"
            )
        return result

    return job


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
    run: RecipeRun,
    statuses: Mapping[str, str],
    seconds: float,
    root: RunDir | None = None,
    state: GraphState | None = None,
) -> dict[str, Any]:
    """``recipe.json`` (and the run's summary) from the trials' folders as they are now;
    ``state`` (the scheduler's, else what the cache holds) gives its ``phases`` table."""
    result = compare(run, statuses)
    result["seconds"] = round(seconds, 1)
    result["trial_seconds"] = round(sum(_trial_seconds(run, t) for t in run.trials), 1)
    state = state or GraphState.read(run.graph())
    result["phases"] = state.table(run.out)
    result["phase_seconds"] = round(sum(state.seconds.values()), 1)
    items = result["phases"]["items"]
    for trial in result["trials"]:
        keys = state.graph.trials.get(trial["id"], {})
        trial["phases"] = {name: items[key]["folder"] for name, key in keys.items()}
    atomic_write_json(run.out / RESULT_FILE, result)
    if root is not None:
        root.write_summary({**result, "status": "completed" if result["complete"] else "partial"})
    return result


def _trial_seconds(run: RecipeRun, trial: Trial) -> float:
    """The compute time a trial took when it ran (0 when it has not completed)."""
    summary = trial_summary(run.out / TRIALS / trial.folder_name, trial.scenario)
    return float(summary.get("seconds", 0.0)) if summary else 0.0


def compute_seconds(result: Mapping[str, Any]) -> float:
    """The compute time a result's phases took, each counted once (a trial's own time
    counts the embedding it shares with 38 others 39 times); the trials' sum for a result
    written before phases were."""
    return float(result.get("phase_seconds") or result.get("trial_seconds") or 0.0)


def duration(seconds: float) -> str:
    """``45 s``, ``12.5 min``, ``4.1 h``: a compute time in the unit a reader thinks in."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def load_result(out: Path) -> dict[str, Any] | None:
    """The last ``recipe.json`` in ``out``, or None."""
    try:
        result = read_json(out / RESULT_FILE, "recipe result")
    except RunError:
        return None
    return result if isinstance(result, dict) else None
