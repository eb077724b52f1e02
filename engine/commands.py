"""Commands the UI (or a script) sends to a running session.

The worker applies them between steps; the UI thread never touches the model or optimizer.
Each command is acknowledged with a ``Log`` event saying what happened.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Command:
    pass


@dataclasses.dataclass(frozen=True)
class SetLR(Command):
    lr: float


@dataclasses.dataclass(frozen=True)
class ScaleLR(Command):
    """Multiply the current rate (the ``+``/``-`` keys), resolved by the worker, not the UI."""

    factor: float


@dataclasses.dataclass(frozen=True)
class SetTrigger(Command):
    trigger: str


@dataclasses.dataclass(frozen=True)
class SetTargetLabel(Command):
    label: int


@dataclasses.dataclass(frozen=True)
class Pause(Command):
    pass


@dataclasses.dataclass(frozen=True)
class Resume(Command):
    pass


@dataclasses.dataclass(frozen=True)
class Stop(Command):
    pass


@dataclasses.dataclass(frozen=True)
class Checkpoint(Command):
    pass


@dataclasses.dataclass(frozen=True)
class SkipPhase(Command):
    """End the current phase of a scenario as Stop would (its model is kept) and go on."""


@dataclasses.dataclass(frozen=True)
class SetPhaseParams(Command):
    """Change a scenario phase that has not started yet: its plugin params, or (``budget``)
    its attacker budget. Validated by the worker against the plugin's declaration."""

    phase: str
    values: dict = dataclasses.field(default_factory=dict)
    budget: bool = False
