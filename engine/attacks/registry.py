"""The attack registry and what an attack is handed: a model, the attacker's data, a trainer.

An attack never sees the owner's key. The referee (``engine.jobs.referee``) measures test
accuracy and retention; the attack only gets :class:`AttackEnv`, whose ``train`` runs the one
training loop with the referee's probes hidden inside a closure, and which returns the loss
and the step count but no scores. That is the threat model of every removal paper we
reproduce: the adversary cannot query the watermark verifier.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.queries import QueryCounter
from engine.data.meta import DatasetMeta
from engine.errors import ConfigError
from engine.models import Architecture
from engine.registry import Registry, checked_params
from engine.session import JobContext
from engine.training import OptimSettings, Source

P = TypeVar("P")


@dataclasses.dataclass(frozen=True)
class TrainReport:
    """What a training phase tells the attacker: how far it went and its last loss."""

    steps: int
    loss: float


TrainFn = Callable[..., TrainReport]


@dataclasses.dataclass
class AttackEnv:
    """The engine's services for one attack: the training loop, logging, device and seed.

    ``train(model, sources, settings, steps=N, params=None)`` runs :class:`TrainLoop` under
    the attack's phase name; SetLR/ScaleLR/Stop/Pause from the UI reach it as in any phase.
    """

    ctx: JobContext
    device: torch.device
    seed: int
    train_fn: TrainFn
    #: also stream these probes from the next training on (the attacker's own marks); the
    #: referee's probes, which hold the owner's key, are never handed to the attack
    track: Callable[[list[Any]], None] = lambda probes: None
    #: answers asked of the suspect model (``frozen_copy(model, env.queries)`` counts them);
    #: the referee reads it into the summary's cost
    queries: QueryCounter = dataclasses.field(default_factory=QueryCounter)

    def train(
        self,
        model: nn.Module,
        sources: list[Source],
        settings: OptimSettings,
        *,
        steps: int,
        params: Iterable[nn.Parameter] | None = None,
    ) -> TrainReport:
        return self.train_fn(model, sources, settings, steps=steps, params=params)

    def log(self, message: str) -> None:
        self.ctx.log(message)


@dataclasses.dataclass
class AttackResult:
    """The attacker's model (possibly a new architecture: distillation) and what it did."""

    model: nn.Module
    arch: Architecture
    steps: int = 0
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: watermark keys the attacker embedded and claims (piracy): the referee verifies each
    #: on its own test data after the attack
    claims: list[Any] = dataclasses.field(default_factory=list)


class Attack(Generic[P]):
    """Base of every attack: holds its validated params; ``run`` does the removal.

    ``planned_steps`` lets the referee announce the phase length (progress bars) before
    anything runs; attacks that do not train return 0.
    """

    def __init__(self, params: P) -> None:
        self.params = params

    def check_budget(self, budget: AttackerBudget) -> None:
        """Refuse a budget the attack cannot use, before any data is loaded or run created."""

    def check_data(
        self, data: DatasetMeta, budget: AttackerBudget, given: Mapping[str, Any] | None = None
    ) -> None:
        """Refuse params the suspect's dataset cannot take (a class it lacks, a patch larger
        than its images), known from the run's manifest before anything is loaded or
        written; ``given``: the user's own text, which messages quote. None by default."""

    def planned_steps(self, data: AttackerData) -> int:
        return 0

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        raise NotImplementedError


class LabelledAttack(Attack[P]):
    """An attack that trains on the attacker's labelled data, ``params.batch`` per step.

    A budget without labelled data is refused before anything runs; ``without_labels``
    says what to use instead.
    """

    label: str = "this attack"
    without_labels: str = ""

    def check_budget(self, budget: AttackerBudget) -> None:
        if budget.data_fraction == 0:
            hint = f"; with none, {self.without_labels}" if self.without_labels else ""
            raise ConfigError(f"{self.label} needs labelled data (--data-fraction > 0){hint}")

    def planned_steps(self, data: AttackerData) -> int:
        return data.total_steps(len(data.labeled_x), self.params.batch)  # type: ignore[attr-defined]


AttackFactory = Callable[[Any], Attack[Any]]
ATTACKS: Registry[AttackFactory] = Registry("attack")
#: the roles of :data:`ATTACKS`' plugins: removal attacks, and detectors (trigger scans that
#: may also remove); each is a job kind of its own (``attack``, ``detect``)
REMOVAL, DETECTOR = "removal", "detector"
#: the SoK's attack families (Lukas et al., S&P 2022), the order listings follow: a served
#: model's input transform; changes to the weights (fine-tuning, pruning, shifting...);
#: stealing the function from the model's answers; answering the verifier wrongly (evasion);
#: trigger reversal (detectors)
PREPROCESSING, MODIFICATION, EXTRACTION, EVASION, DETECTION = (
    "preprocessing",
    "modification",
    "extraction",
    "evasion",
    "detection",
)
FAMILIES = (PREPROCESSING, MODIFICATION, EXTRACTION, EVASION, DETECTION)
#: one line per family, as listings head each group
FAMILY_TITLES = {
    PREPROCESSING: "the model served behind a transform of every query",
    MODIFICATION: "the weights change: fine-tuning, pruning, shifting...",
    EXTRACTION: "a new model learnt from the suspect's answers",
    EVASION: "the model served behind a filter that answers key queries wrongly",
    DETECTION: "trigger reversal, which may also remove (wmtui detect)",
}


def register_attack(
    name: str, params: type, family: str = MODIFICATION
) -> Callable[[AttackFactory], AttackFactory]:
    """``@register_attack("ft-basic", FTBasicParams)`` on an :class:`Attack` subclass;
    ``family`` one of :data:`FAMILIES` (a plugin's own may name another)."""
    return ATTACKS.register(name, params, role=REMOVAL, family=family)


def register_detector(name: str, params: type) -> Callable[[AttackFactory], AttackFactory]:
    """``@register_detector("gan", GanParams)`` on a ``Detector`` subclass: listed by
    ``wmtui detect``, the playground's scan form and scenario ``detect`` phases."""
    return ATTACKS.register(name, params, role=DETECTOR, family=DETECTION)


def make_attack(name: str, params: Any = None, *, role: str | None = None) -> Attack[Any]:
    """The registered plugin ``name`` (of ``role`` when given) with validated params: a
    dataclass of its params type, or loose values (CLI text, TOML, a form) to parse."""
    plugin = ATTACKS.get(name, role, kind="detection method" if role == DETECTOR else None)
    return plugin.factory(checked_params(plugin, name, params))


def make_detector(name: str, params: Any = None) -> Any:
    """:func:`make_attack` among the detectors only."""
    return make_attack(name, params, role=DETECTOR)
