"""Trials as graphs of phases, each phase keyed by everything its output depends on.

A recipe's trials (and a sweep's) repeat work: the embedding that thirty attack cells start
from is the same embedding in each of them. Here every phase of every trial gets a *key*, a
hash of its kind, plugin, parameters, budget, the training setup that shapes it and the keys
of the phases it works on (recursively, through ``on``). Equal keys mean equal outputs, so
the trials' phases collapse into one graph of unique phases, each computed once into its own
folder of a phase cache (:mod:`engine.studies.phase_cache`).

A phase can also depend on an earlier phase of its trial without working on its model: a
``threshold`` phase writes the SoK's decision threshold into a record that later phases
(the attack's verdict) read. Phases of the kinds in :data:`RECORD_KINDS` therefore come
*before* every later phase of their trial: their keys are part of those phases' keys, and
the scheduler runs them first.

What says *where* a phase runs (device, data folder, threads) is left out of the key: a run
on a GPU box reuses what a laptop computed and the other way round. The key also carries
:data:`CACHE_VERSION`, raised whenever the meaning of a cached folder changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from engine.config import TrainConfig
from engine.studies.scenarios import PhaseSpec, Scenario

#: raised when a cached phase folder no longer means what it meant (old ones are not reused)
CACHE_VERSION = 1
#: train-config fields that say where a phase runs, not what it computes
WHERE_FIELDS = ("device", "data_dir")
#: the config field an attack or scan takes from the scenario (the rest it reads from the
#: model it works on, whose key is part of its own)
WORK_FIELDS = ("eval_every",)
#: phase kinds whose output later phases of the trial read besides their ``on`` model
RECORD_KINDS = ("threshold",)


@dataclasses.dataclass
class PhaseNode:
    """One unique phase: the first trial's spec and config stand for every trial using it."""

    key: str
    spec: PhaseSpec
    config: TrainConfig
    scenario: str
    #: the key of the phase whose model this one works on (None: it starts from scratch)
    input: str | None
    folder: Path
    #: (trial id, phase name) of every trial phase this node computes
    uses: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    #: keys of earlier phases whose records this one reads (:data:`RECORD_KINDS`)
    after: list[str] = dataclasses.field(default_factory=list)

    @property
    def needs(self) -> list[str]:
        """Every key that must be done before this phase runs."""
        return ([self.input] if self.input else []) + self.after

    @property
    def label(self) -> str:
        return self.spec.label()


@dataclasses.dataclass
class PhaseGraph:
    """The unique phases of a set of trials (inputs before their users) and, per trial,
    which node each of its phases is."""

    cache: Path
    nodes: dict[str, PhaseNode]
    #: trial id -> {phase name: key}, in the trial's phase order
    trials: dict[str, dict[str, str]]

    @property
    def uses(self) -> int:
        """Phases in the matrix: what running every trial on its own would compute."""
        return sum(len(phases) for phases in self.trials.values())

    def folder(self, trial: str, phase: str) -> Path:
        return self.nodes[self.trials[trial][phase]].folder

    def dependents(self, key: str) -> list[str]:
        """Every node that needs ``key``'s output, directly or through others."""
        found: list[str] = []
        for other in self.nodes.values():  # inputs come first: one pass finds them all
            if any(need == key or need in found for need in other.needs):
                found.append(other.key)
        return found


def phase_identity(
    spec: PhaseSpec, config: TrainConfig, input_key: str | None, after: list[str] | None = None
) -> dict[str, Any]:
    """Everything a phase's output depends on (what its key hashes)."""
    settings = config.to_dict()
    if spec.makes_model:
        used = {k: v for k, v in settings.items() if k not in WHERE_FIELDS}
    else:
        used = {k: settings[k] for k in WORK_FIELDS if k in settings}
    identity = {
        "version": CACHE_VERSION,
        "kind": spec.kind,
        "plugin": spec.plugin,
        "params": spec.params,
        "budget": spec.budget,
        "train": spec.train,
        "sweep": spec.sweep,
        "chain": spec.chain,
        "threshold": spec.threshold,
        "reference_acc": spec.reference_acc,
        "config": used,
        "input": input_key,
    }
    return identity | {"after": list(after)} if after else identity


def phase_key(
    spec: PhaseSpec, config: TrainConfig, input_key: str | None, after: list[str] | None = None
) -> str:
    """A stable 16-hex-digit hash of :func:`phase_identity` (name and title left out: they
    label a phase, they do not change it)."""
    text = json.dumps(
        phase_identity(spec, config, input_key, after),
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def folder_name(spec: PhaseSpec, key: str) -> str:
    """``embed-pattern-KEY``: readable, and a function of the key alone (kind and plugin are
    part of it), so every recipe names a shared phase's folder alike."""
    what = spec.plugin or ("chain" if spec.chain else "")
    return f"{spec.kind}-{what}-{key}" if what else f"{spec.kind}-{key}"


def build_graph(trials: Iterable[tuple[str, Scenario, TrainConfig]], cache: Path) -> PhaseGraph:
    """The graph of ``(trial id, scenario, config)`` trials over the phase cache ``cache``."""
    nodes: dict[str, PhaseNode] = {}
    by_trial: dict[str, dict[str, str]] = {}
    for trial_id, scenario, config in trials:
        keys: dict[str, str] = {}
        records: list[str] = []
        for spec in scenario.phases:
            source = None if spec.makes_model_from_scratch else keys[spec.on]
            key = phase_key(spec, config, source, records)
            node = nodes.get(key)
            if node is None:
                folder = cache / folder_name(spec, key)
                node = PhaseNode(key, spec, config, scenario.name, source, folder)
                node.after = list(records)
                nodes[key] = node
            node.uses.append((trial_id, spec.name))
            keys[spec.name] = key
            if spec.kind in RECORD_KINDS:
                records.append(key)
        by_trial[trial_id] = keys
    return PhaseGraph(cache, nodes, by_trial)
