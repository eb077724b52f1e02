"""Sessions the playground starts: one per phase, each recording into its own run directory.

The app only ever holds the current session; follow-up phases (an attack, a scan) read the
model the previous phase saved, exactly as the headless commands chain runs, through the
same :class:`~engine.jobs.JobSpec` and its checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.config import TrainConfig
from engine.jobs import JobSpec, embed_job, train_job
from engine.jobs.followup import sibling_path
from engine.runs import RunDir
from engine.session import Session
from engine.studies.scenario_runner import prepare_scenario
from engine.studies.scenarios import Scenario


def training_session(
    config: TrainConfig, run: RunDir, scheme: str | None = None, params: Any = None
) -> Session:
    """Plain training, or embedding ``scheme``, into a run folder that already exists (tests
    and benchmarks make their own; ``wmtui tui`` goes through a checked JobSpec)."""
    job = train_job(config, run) if scheme is None else embed_job(config, scheme, params, run)
    return Session(job, [run.event_sink()])


def followup_session(
    kind: str, source: Path, name: str, params: Any, budget: Any
) -> tuple[Session, Path]:
    """A job of ``kind`` (an attack, a scan) on ``source``'s saved model, in a folder beside
    it; refused (UserError, nothing written) as the headless command would refuse it."""
    spec = JobSpec(kind, name, params, budget=budget, source=source, out=sibling_path(source, name))
    built = spec.validate().build()
    assert built.run is not None
    return built.session(), built.run.path


def scenario_session(
    scenario: Scenario, overrides: dict[str, Any] | None, out: Path
) -> tuple[Session, RunDir]:
    """A whole scenario on one session: ``out/events.jsonl`` gets the full stream and each
    phase's own folder ``out/NN-name/`` gets its part, as the headless commands write them."""
    job, root, sinks = prepare_scenario(scenario, scenario.config(overrides), out)
    return Session(job, [root.event_sink(), *sinks]), root
