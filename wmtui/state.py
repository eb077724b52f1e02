"""What the dashboard shows, folded from the event stream; no Textual here.

Keeping this pure lets the same fold serve the live app, replay and tests, and keeps the
UI thread's work per repaint proportional to the new events only.
"""

from __future__ import annotations

import dataclasses

import torch

from engine.events import (
    Checkpoint,
    ClassScan,
    Done,
    Error,
    Event,
    Log,
    Metrics,
    Phase,
    TriggerPreview,
)

MAX_POINTS = 600


@dataclasses.dataclass
class Series:
    """One plotted line; thinned by half when it grows past MAX_POINTS."""

    x: list[float] = dataclasses.field(default_factory=list)
    y: list[float] = dataclasses.field(default_factory=list)

    def add(self, x: float, y: float) -> None:
        self.x.append(x)
        self.y.append(y)
        if len(self.x) > MAX_POINTS:
            self.x, self.y = self.x[::2], self.y[::2]


@dataclasses.dataclass
class DashboardState:
    status: str = "starting"
    phase: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    lr: float | None = None
    loss: float | None = None
    test_acc: float | None = None
    images_per_s: float = 0.0
    info: dict[str, object] = dataclasses.field(default_factory=dict)
    loss_series: Series = dataclasses.field(default_factory=Series)
    acc_series: Series = dataclasses.field(default_factory=Series)
    retention: dict[str, Series] = dataclasses.field(default_factory=dict)
    phase_starts: list[int] = dataclasses.field(default_factory=list)
    x_offset: int = 0  # plots share one x axis across phases: phase steps start here
    last_x: int = 0
    pending_log: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    summary: dict[str, object] = dataclasses.field(default_factory=dict)
    scan_sizes: dict[int, float] = dataclasses.field(default_factory=dict)
    scan_done: set[int] = dataclasses.field(default_factory=set)
    scan_threshold: float | None = None
    flagged_class: int | None = None
    scan_verdict: bool = False  # True once the engine has decided (flagged_class may be None)
    previews: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    version: int = 0  # bumped on every change, so widgets repaint only when needed

    def apply(self, event: Event) -> None:
        self.version += 1
        if isinstance(event, Metrics):
            self._metrics(event)
        elif isinstance(event, Phase):
            self._phase(event)
        elif isinstance(event, Log):
            prefix = {"warning": "! ", "error": "x "}.get(event.level, "")
            self.log(f"{prefix}{event.message}")
            if event.message == "paused":
                self.status = "paused"
            elif event.message == "resumed":
                self.status = "running"
        elif isinstance(event, ClassScan):
            if event.phase != self.phase:
                self.phase = event.phase
            self.scan_sizes[event.cls] = event.size
            if event.done:
                self.scan_done.add(event.cls)
        elif isinstance(event, TriggerPreview):
            self.previews[event.name] = event.to_tensor()
        elif isinstance(event, Checkpoint):
            pass  # acknowledged through a Log line
        elif isinstance(event, Error):
            first = event.message.splitlines()[0] if event.message else "error"
            self.error = first
            self.log(f"x error: {first}")
        elif isinstance(event, Done):
            self.status = (
                event.status if not (self.error and event.status == "failed") else "failed"
            )
            self.summary = dict(event.summary)
            self.log(f"session {event.status}")

    def _metrics(self, event: Metrics) -> None:
        if self.status in {"starting", "stopping"}:
            self.status = "running"
        self.phase, self.step, self.epoch = event.phase, event.step, event.epoch
        self.lr, self.loss, self.images_per_s = event.lr, event.loss, event.images_per_s
        x = self.x_offset + event.step
        self.last_x = x
        self.loss_series.add(x, event.loss)
        if event.test_acc is not None:
            self.test_acc = event.test_acc
            self.acc_series.add(x, 100 * event.test_acc)
        for name, value in event.retention.items():
            self.retention.setdefault(name, Series()).add(x, 100 * value)

    def _phase(self, event: Phase) -> None:
        if event.status == "start":
            self.phase = event.name
            self.info = dict(event.info)
            self.total_steps = int(event.info.get("steps", 0) or 0)
            self.x_offset = self.last_x
            self.step = 0
            self.phase_starts.append(self.x_offset)
            self.status = "running"
            if "threshold" in event.info:
                self.scan_sizes, self.scan_done, self.flagged_class = {}, set(), None
                self.scan_verdict = False
                self.scan_threshold = _float_or_none(event.info.get("threshold"))
            self.log(f"phase {event.name} started")
        else:
            if "flagged_class" in event.info:
                flagged = event.info.get("flagged_class")
                self.flagged_class = int(flagged) if isinstance(flagged, int) else None
                self.scan_verdict = True
                verdict = "none" if self.flagged_class is None else str(self.flagged_class)
                self.log(f"flagged class: {verdict}")
            self.log(f"phase {event.name} ended")

    @property
    def x_upper(self) -> int:
        """Right end of the shared x axis: the end of the current phase as planned."""
        return max(self.x_offset + self.total_steps, self.last_x, 1)

    def scan_outlier(self) -> int | None:
        """The engine's verdict once given; while scanning, the current smallest class."""
        if self.scan_verdict or not self.scan_sizes:
            return self.flagged_class
        return min(self.scan_sizes, key=self.scan_sizes.__getitem__)

    def log(self, line: str) -> None:
        self.pending_log.append(line)

    def take_log(self) -> list[str]:
        lines, self.pending_log = self.pending_log, []
        return lines


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
