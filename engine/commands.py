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
