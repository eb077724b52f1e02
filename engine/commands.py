"""Commands the UI (or a script) sends to a running session.

The worker applies them between steps; the UI thread never touches the model or optimizer.
Each command is acknowledged with a ``Log`` event saying what happened.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar


@dataclasses.dataclass(frozen=True)
class Command:
    #: what the acknowledgement calls the command ("trigger switch ignored: ..."): people
    #: read the log, so it names the action, never the class (``label`` is a field name)
    what: ClassVar[str] = "command"


@dataclasses.dataclass(frozen=True)
class SetLR(Command):
    what: ClassVar[str] = "learning rate change"
    lr: float


@dataclasses.dataclass(frozen=True)
class ScaleLR(Command):
    """Multiply the current rate (the ``+``/``-`` keys), resolved by the worker, not the UI."""

    what: ClassVar[str] = "learning rate change"
    factor: float


@dataclasses.dataclass(frozen=True)
class SetTrigger(Command):
    what: ClassVar[str] = "trigger switch"
    trigger: str


@dataclasses.dataclass(frozen=True)
class SetTargetLabel(Command):
    what: ClassVar[str] = "target label switch"
    label: int


@dataclasses.dataclass(frozen=True)
class Pause(Command):
    what: ClassVar[str] = "pause"


@dataclasses.dataclass(frozen=True)
class Resume(Command):
    what: ClassVar[str] = "resume"


@dataclasses.dataclass(frozen=True)
class Stop(Command):
    what: ClassVar[str] = "stop"


@dataclasses.dataclass(frozen=True)
class Checkpoint(Command):
    what: ClassVar[str] = "checkpoint"


@dataclasses.dataclass(frozen=True)
class SkipPhase(Command):
    """End the current phase of a scenario as Stop would (its model is kept) and go on."""

    what: ClassVar[str] = "phase skip"


@dataclasses.dataclass(frozen=True)
class SetPhaseParams(Command):
    """Change a scenario phase that has not started yet: its plugin params, or (``budget``)
    its attacker budget. Validated by the worker against the plugin's declaration."""

    what: ClassVar[str] = "phase edit"
    phase: str
    values: dict = dataclasses.field(default_factory=dict)
    budget: bool = False


@dataclasses.dataclass(frozen=True)
class Followup(Command):
    """Run a job of ``kind`` (an attack, a scan) on the model the worker holds now, in its
    latest state, then go back to what it was doing: the `a` and `d` keys mid-phase."""

    what: ClassVar[str] = "follow-up job"
    kind: str
    plugin: str
    params: dict = dataclasses.field(default_factory=dict)
    budget: dict = dataclasses.field(default_factory=dict)
