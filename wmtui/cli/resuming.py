"""``wmtui resume RUN``: go on with a run that was stopped (Ctrl-C, SIGTERM, SIGHUP, a crash).

What "go on" means depends on the run, read from its manifest:

* a training run continues from its last checkpoint, or starts again when it was stopped
  before its first one;
* an embedding starts again from the start with the same settings and seed: its key is part
  of what it makes, and continuing the weights under a key made again would not be one run;
* a scenario keeps the phases an earlier run completed and runs the others from their start
  (the rule recipes and sweeps resume by).

Anything else (an attack, a scan, a verification) is one line and exit 2: run it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import TrainConfig
from engine.errors import RunError, UserError
from engine.jobs import JobSpec
from engine.runs import SUMMARY, RunDir
from engine.threads import apply_threads, choose_threads


def resume_run(run_dir: Path, epochs: int | None, json_mode: bool, threads: int | None) -> int:
    """Check ``run_dir`` (bad: exit 2, nothing written), then go on with it headless."""
    from wmtui.cli.common import run_headless, run_spec

    choose_threads(threads)  # a bad --threads is refused before the run is even read
    run = RunDir.open(run_dir)
    manifest = run.manifest()
    command = str(manifest.get("command", ""))
    overrides = {} if epochs is None else {"epochs": epochs}
    if command == "scenario" or "scheme" in manifest:
        refuse_completed(run)
    if command == "scenario":
        return _resume_scenario(run_dir, manifest, overrides, json_mode, threads)
    if "scheme" in manifest:  # embed, or the playground embedding
        spec = _restarted_embedding(run_dir, manifest, overrides)
        note = apply_threads(threads)
        built = spec.validate().build()
        restart = f"{run_dir}: an embedding starts again from the start (same settings, seed)"
        return run_headless(built.job, built.run, json_mode, note=f"{restart}\n{note}")
    if command not in ("train", "tui"):
        raise UserError(
            f"{run_dir} is a {command or 'unknown'} run: wmtui resume goes on with train, "
            "embed and scenario runs; run that command again"
        )
    return run_spec(JobSpec.resume_run(run_dir, **overrides), json_mode, threads)[0]


def refuse_completed(run: RunDir) -> None:
    """An embedding restarts from the start and a scenario re-runs what is unfinished: on a
    completed run the first would replace a finished model and key, the second do nothing."""
    if (run.path / SUMMARY).is_file() and run.summary().get("status") == "completed":
        raise UserError(f"{run.path} already completed: nothing to resume")


def _restarted_embedding(
    run_dir: Path, manifest: dict[str, Any], overrides: dict[str, Any]
) -> JobSpec:
    return JobSpec(
        "embed",
        str(manifest["scheme"]),
        dict(manifest.get("scheme_params") or {}),
        {**manifest["config"], **overrides},
        source=Path(manifest["from"]) if manifest.get("from") else None,
        out=run_dir,
        overwrite=True,
        command=str(manifest.get("command", "embed")),
    )


def _resume_scenario(
    run_dir: Path,
    manifest: dict[str, Any],
    overrides: dict[str, Any],
    json_mode: bool,
    threads: int | None,
) -> int:
    from engine.jobs.common import check_config
    from engine.studies.scenario_runner import prepare_scenario
    from engine.studies.scenarios import PhaseSpec, Scenario
    from wmtui.cli.common import run_headless

    recorded = manifest.get("scenario")
    try:
        scenario = Scenario(
            **{**recorded, "phases": [PhaseSpec(**phase) for phase in recorded["phases"]]}
        )
    except (TypeError, KeyError) as exc:
        raise RunError(f"run manifest is corrupt: {run_dir} (scenario: {exc})") from None
    config = check_config(TrainConfig.from_mapping({**manifest["config"], **overrides}))
    note = apply_threads(threads)
    job, root, sinks = prepare_scenario(scenario, config, run_dir, resume=True)
    kept = f"{run_dir}: completed phases are kept, the others run from their start"
    return run_headless(job, root, json_mode, sinks, note=f"{kept}\n{note}")
