"""Commands the UI (or a script) sends to a running session.

The worker applies them between steps; the UI thread never touches the model or optimizer.
Each command is acknowledged with a ``Log`` event saying what happened.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from engine.errors import ConfigError


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


# -- acknowledgements ------------------------------------------------------------------------
# The words the worker answers commands with (one Log line each), in one place: the session,
# the training loop and the scripted stand-ins the UI is tested against all build them here,
# so a change of wording reaches every one of them (the UI reads ``PAUSED`` and ``RESUMED``).
PAUSED = "paused"
RESUMED = "resumed"
NOT_PAUSED = "resume: not paused"
STOPPING = "stop requested: ending after this step"
SKIPPING = "skipping to the next phase: ending this one after this step"
NO_NEXT_PHASE = "there is no next phase"
NOT_TAKEN = "the current phase does not take it"
NO_CHECKPOINTS = "checkpoint: this phase does not save checkpoints"


def ignored(command: Command, why: str) -> str:
    return f"{command.what} ignored: {why}"


def refused(command: Command, reason: object) -> str:
    return f"{command.what} refused: {reason}"


#: a stop that arrives as the job ends on its own: nothing lost, so not a warning
ALREADY_ENDED = "stop: the job had already ended (its run folder is complete)"


def not_applied(command: Command) -> str:
    return f"{command.what} not applied: the job has ended"


def check_lr(lr: float) -> None:
    """The rates a running phase takes (SetLR, ScaleLR): the UI's prompt checks its own."""
    if not (math.isfinite(lr) and 0 < lr <= 100):
        raise ConfigError(f"learning rate must be in (0, 100], got {lr}")


def lr_set(lr: float, step: int) -> str:
    return f"learning rate set to {lr:.4g} at step {step}"


def checkpoint_saved(where: object) -> str:
    return f"checkpoint saved: {where}"
