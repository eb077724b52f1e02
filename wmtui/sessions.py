"""Sessions the playground starts: one per phase, each recording into its own run directory.

The app only ever holds the current session; follow-up phases (an attack, a scan) read the
model the previous phase saved, exactly as the headless commands chain runs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from engine.attacks import (
    ATTACKS,
    AttackerBudget,
    attack_job,
    attack_manifest,
    detect_job,
    detect_manifest,
)
from engine.config import TrainConfig
from engine.jobs import embed_job, new_run_manifest, train_job
from engine.runs import RunDir
from engine.scenarios import Scenario, prepare_scenario
from engine.session import Job, Session


def _session(job: Job, run: RunDir) -> Session:
    return Session(job, [run.event_sink()])


def training_session(
    config: TrainConfig, run: RunDir, scheme: str | None = None, params: Any = None
) -> Session:
    """Plain training, or embedding ``scheme`` while training when one is given."""
    if scheme is None:
        return _session(train_job(config, run), run)
    return _session(embed_job(config, scheme, params, run), run)


def sibling_run(source: Path, kind: str) -> Path:
    """``runs/<kind>-<time>`` beside the source run, so a session's runs stay together."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = source.parent / f"{kind}-{stamp}"
    n = 2
    while path.exists():
        path, n = source.parent / f"{kind}-{stamp}-{n}", n + 1
    return path


def attack_session(
    source: Path, name: str, params: Any, budget: AttackerBudget
) -> tuple[Session, Path]:
    """A removal attack (or, for a detector's name, a scan) on ``source``'s saved model."""
    from engine.attacks.detection import Detector

    factory = ATTACKS.get(name).factory
    is_detector = isinstance(factory, type) and issubclass(factory, Detector)
    manifest = (detect_manifest if is_detector else attack_manifest)(source, name, params, budget)
    run = RunDir.create(sibling_run(source, name), manifest)
    job = (detect_job if is_detector else attack_job)(source, name, params, budget, run)
    return _session(job, run), run.path


def tui_run(config: TrainConfig, out: Path, scheme: str | None, params: Any) -> RunDir:
    manifest = new_run_manifest(config, "tui")
    if scheme is not None:
        manifest |= {"scheme": scheme, "scheme_params": vars(params) if params else {}}
    return RunDir.create(out, manifest)


def scenario_session(
    scenario: Scenario, overrides: dict[str, Any] | None, out: Path
) -> tuple[Session, RunDir]:
    """A whole scenario on one session: ``out/events.jsonl`` gets the full stream and each
    phase's own folder ``out/NN-name/`` gets its part, as the headless commands write them."""
    job, root, sinks = prepare_scenario(scenario, scenario.config(overrides), out)
    return Session(job, [root.event_sink(), *sinks]), root
