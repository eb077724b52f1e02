"""Typed events: the one stream that feeds the TUI, headless output, metrics.jsonl and replay.

Every event is a small JSON-serialisable dataclass. ``time`` is seconds since the session
started, so a recorded run can be replayed at its original pace.
"""

from __future__ import annotations

import base64
import dataclasses
import math
from typing import Any, ClassVar

import torch


@dataclasses.dataclass
class Event:
    kind: ClassVar[str] = "event"
    time: float = dataclasses.field(default=0.0, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **dataclasses.asdict(self)}


@dataclasses.dataclass
class Metrics(Event):
    """A progress reading; ``test_acc`` is None between evaluations. ``queries``: answers the
    suspect model has given the attack so far (its query budget's counter), so a thief's
    spending is watched live; None outside attacks and in recordings made before it was sent."""

    kind: ClassVar[str] = "metrics"
    phase: str
    step: int
    epoch: float
    lr: float
    loss: float
    images_per_s: float
    test_acc: float | None = None
    retention: dict[str, float] = dataclasses.field(default_factory=dict)
    queries: int | None = None


@dataclasses.dataclass
class ClassScan(Event):
    """One class's perturbation-size estimate from a trigger search (GAN, Neural Cleanse).

    All classes are searched together, so none settles before the others: ``step`` of
    ``steps`` is the search's progress (0 in recordings made before it was sent)."""

    kind: ClassVar[str] = "class_scan"
    phase: str
    cls: int
    size: float
    done: bool = False
    step: int = 0
    steps: int = 0


@dataclasses.dataclass
class Discrepancy(Event):
    """One epoch of data-free adversarial distillation (the ``datafree`` scheme).

    ``value`` is the epoch's mean teacher-student discrepancy; ``second_diff`` its second-order
    difference D[t] - 2 D[t-1] + D[t-2] (None for the first two epochs). ``threshold`` is
    Delta0 / 10 once the first ``t0`` epochs have fixed Delta0 (None before). ``truncated`` is
    True on the epoch where the rule stopped the distillation (never on a ``--complete``
    run): a live view marks that epoch."""

    kind: ClassVar[str] = "discrepancy"
    phase: str
    epoch: int
    epochs: int
    value: float
    second_diff: float | None = None
    threshold: float | None = None
    truncated: bool = False


@dataclasses.dataclass
class TriggerPreview(Event):
    """A small uint8 image (CHW, base64) to show beside another: true vs reversed trigger."""

    kind: ClassVar[str] = "trigger_preview"
    name: str
    shape: list[int]
    pixels: str

    @classmethod
    def from_tensor(cls, name: str, image: torch.Tensor) -> TriggerPreview:
        """From a float [0,1] or uint8 image [C,H,W]."""
        if image.dtype != torch.uint8:
            image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        image = image.cpu().contiguous()
        return cls(name, list(image.shape), base64.b64encode(image.numpy().tobytes()).decode())

    def to_tensor(self) -> torch.Tensor:
        raw = bytearray(base64.b64decode(self.pixels))
        return torch.frombuffer(raw, dtype=torch.uint8).reshape(self.shape)


@dataclasses.dataclass
class Phase(Event):
    """A phase starts or ends; ``info`` says what it is (dataset, model, scheme, ...)."""

    kind: ClassVar[str] = "phase"
    name: str
    status: str  # "start" | "end"
    index: int = 0
    total: int = 1
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Log(Event):
    kind: ClassVar[str] = "log"
    message: str
    level: str = "info"  # "info" | "warning" | "error"


@dataclasses.dataclass
class Checkpoint(Event):
    kind: ClassVar[str] = "checkpoint"
    path: str
    step: int
    epoch: float


@dataclasses.dataclass
class Error(Event):
    """A phase failed (bad input, NaN loss, ...); ``step`` is where, when known."""

    kind: ClassVar[str] = "error"
    message: str
    phase: str = ""
    step: int | None = None


@dataclasses.dataclass
class Done(Event):
    """The session ended: ``status`` is completed, stopped or failed."""

    kind: ClassVar[str] = "done"
    status: str
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)


def json_safe(value: Any) -> Any:
    """NaN and infinities are not JSON: summaries and events report them as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        Metrics,
        ClassScan,
        Discrepancy,
        TriggerPreview,
        Phase,
        Log,
        Checkpoint,
        Error,
        Done,
    )
}


def event_from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from its JSON form (``replay``); unknown kinds raise ValueError."""
    data = dict(data)
    kind = data.pop("event", None)
    if kind not in EVENT_TYPES:
        raise ValueError(f"unknown event kind {kind!r}")
    cls = EVENT_TYPES[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
