"""The phase cache: one run folder per phase key, and the trial folders that point into it.

A phase's output lives in ``CACHE/<kind>-<plugin>-<key>/`` (``--cache DIR``, default
``OUT/phases``), written by its job exactly as the headless command writes a run folder. It
is *done* when that folder holds a completed summary (written atomically at the end, with
the model where the phase makes one); anything less is run again from its start. Recipes,
sweeps and several recipes given one ``--cache`` share these folders.

A trial stays an ordinary scenario folder: its manifest, a summary once every phase is done,
and ``NN-name`` entries that are links to the cache folders (relative when the cache lies
beside the trials). Whatever read a trial's phase folders before (the comparison, reports,
``wmtui report``) reads them through the links unchanged, and :func:`trial_phases` gives the
same mapping as plain paths. A trial folder written before the cache existed keeps its real
phase folders: a completed one is moved into the cache (and linked) the first time a run
plans it, so its work is reused and nothing is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.config import TrainConfig
from engine.errors import RunError
from engine.runs import RunDir, atomic_write_json, read_json
from engine.studies.phase_graph import PhaseGraph, PhaseNode, phase_identity
from engine.studies.scenario_runner import (
    HEADLINE,
    completed,
    completed_summary,
    phase_folder,
    scenario_manifest,
)
from engine.studies.scenarios import Scenario

try:  # a lock keeps two runs sharing a cache from writing one phase at once (POSIX)
    import fcntl
except ImportError:  # pragma: no cover - Windows: one run per cache at a time
    fcntl = None  # type: ignore[assignment]

CACHE = "phases"
#: what a cache folder says about itself (its key and what was hashed), for people and tools
RECORD = "phase.json"
LOCKS = ".locks"


def default_cache(out: Path) -> Path:
    return out / CACHE


def phase_done(node: PhaseNode) -> dict[str, Any] | None:
    """The node's summary when its folder completed (with its model), else None."""
    return completed_summary(node.folder, node.spec)


def write_record(node: PhaseNode, seconds: float) -> None:
    """``phase.json`` beside the run's files: what the key stands for, and how long it took."""
    identity = phase_identity(node.spec, node.config, node.input, node.after)
    record = {
        "key": node.key,
        "kind": node.spec.kind,
        "plugin": node.spec.plugin,
        "seconds": round(seconds, 2),
        "identity": identity,
    }
    atomic_write_json(node.folder / RECORD, json.loads(json.dumps(record, default=str)))


@contextlib.contextmanager
def phase_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock while its phase runs: a second run that wants the same phase
    waits, then finds it done."""
    if fcntl is None:
        yield
        return
    locks = folder.parent / LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{folder.name}.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# -- trial folders ------------------------------------------------------------------------
def adopt_trial(folder: Path, scenario: Scenario, graph: PhaseGraph, trial: str) -> int:
    """Move the completed phase folders of a trial written before the cache into the cache
    (where the cache lacks that phase) and link them; returns how many were moved."""
    moved = 0
    for index, spec in enumerate(scenario.phases, 1):
        entry = phase_folder(folder, index, spec)
        if entry.is_symlink() or not entry.is_dir():
            continue
        target = graph.folder(trial, spec.name)
        if completed_summary(entry, spec) is None or completed_summary(target, spec) is not None:
            continue
        if target.exists():
            shutil.rmtree(target)  # a cut attempt: the adopted folder replaces it
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(entry), str(target))
        _link(entry, target)
        moved += 1
    return moved


def link_trial(
    folder: Path, scenario: Scenario, config: TrainConfig, graph: PhaseGraph, trial: str
) -> None:
    """The trial's folder with its manifest and a link per phase whose folder exists."""
    if not (folder / "manifest.json").is_file():
        RunDir.create(folder, scenario_manifest(scenario, config), overwrite=True)
    for index, spec in enumerate(scenario.phases, 1):
        target = graph.folder(trial, spec.name)
        entry = phase_folder(folder, index, spec)
        if not target.exists() or (entry.is_dir() and not entry.is_symlink()):
            continue
        if entry.is_symlink() and Path(os.readlink(entry)) == _relative(entry, target):
            continue
        _link(entry, target)


def finish_trial(
    folder: Path,
    scenario: Scenario,
    config: TrainConfig,
    graph: PhaseGraph,
    trial: str,
    seconds: Mapping[str, float],
) -> dict[str, Any] | None:
    """The trial's scenario summary once every phase is done (written once: a finished
    trial's folder is not touched again), else None."""
    done = completed(folder)
    if done is not None and all(_phase_ok(folder, i, s) for i, s in _phases(scenario)):
        return done
    link_trial(folder, scenario, config, graph, trial)
    entries = []
    for index, spec in _phases(scenario):
        entry = phase_folder(folder, index, spec)
        summary = completed_summary(entry, spec)
        if summary is None:
            return None
        row = {"name": spec.name, "kind": spec.kind, "plugin": spec.plugin, "run": str(entry)}
        row |= {"status": "completed", "key": graph.trials[trial][spec.name]}
        entries.append(row | {k: summary[k] for k in HEADLINE if k in summary})
    total = sum(seconds.get(graph.trials[trial][s.name], 0.0) for s in scenario.phases)
    summary = {
        "scenario": scenario.name,
        "run": str(folder),
        "phases": entries,
        "status": "completed",
        "seconds": round(total, 2),
    }
    RunDir(folder).write_summary(summary)
    return summary


def trial_phases(folder: Path, scenario: Scenario) -> dict[str, Path]:
    """Each phase name of a trial -> the folder holding its output (the cache folder its
    link points at, or the trial's own ``NN-name`` folder of an older run)."""
    return {
        spec.name: phase_folder(folder, index, spec).resolve() for index, spec in _phases(scenario)
    }


def phase_seconds(node: PhaseNode) -> float:
    """How long the node's phase took when it ran (its record, else its summary)."""
    for path in (node.folder / RECORD, node.folder / "summary.json"):
        try:
            data = read_json(path, "phase record")
        except (RunError, OSError):  # absent or torn: no time known
            continue
        value = data.get("seconds") if isinstance(data, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return 0.0


def _phases(scenario: Scenario) -> list[tuple[int, Any]]:
    return list(enumerate(scenario.phases, 1))


def _phase_ok(folder: Path, index: int, spec: Any) -> bool:
    return completed_summary(phase_folder(folder, index, spec), spec) is not None


def _relative(entry: Path, target: Path) -> Path:
    """The link text: relative where both lie under one folder (the run moves whole)."""
    try:
        return Path(os.path.relpath(target.resolve(), entry.parent.resolve()))
    except ValueError:  # another drive (Windows)
        return target.resolve()


def _link(entry: Path, target: Path) -> None:
    """Replace ``entry`` (a link or nothing) by a link to ``target``, atomically."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    temporary = entry.with_name(f".{entry.name}.{os.getpid()}.link")
    temporary.unlink(missing_ok=True)
    os.symlink(_relative(entry, target), temporary, target_is_directory=True)
    os.replace(temporary, entry)
