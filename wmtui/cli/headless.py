"""Headless output of an event stream: JSON lines on stdout, human progress on stderr.

A TTY gets a Rich progress bar; anything else (CI logs, pipes) gets plain lines at most every
few seconds, so logs stay readable.
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

from engine.events import Checkpoint, Discrepancy, Done, Error, Event, Log, Metrics, Phase
from engine.metrics import percent
from engine.progress import LEVEL as PROGRESS


def metrics_line(event: Metrics) -> str:
    parts = [
        f"{event.phase} step {event.step}",
        f"epoch {event.epoch:.2f}",
        f"loss {event.loss:.4f}",
        f"lr {event.lr:.4g}",
        f"{event.images_per_s:,.0f} img/s",
    ]
    if event.test_acc is not None:
        parts.append(f"test acc {percent(event.test_acc)}")
    parts += [f"{name} {percent(value)}" for name, value in event.retention.items()]
    if event.queries:  # an attack that asked the suspect: its answers so far
        parts.append(f"{event.queries:,} queries")
    return " | ".join(parts)


def discrepancy_line(event: Discrepancy) -> str:
    """``distill epoch 7/40  discrepancy 0.0123  2nd diff 0.0004  (threshold 0.0009)``; the
    epoch the truncation rule stopped at ends in ``<- truncated here``."""
    parts = [
        f"{event.phase} epoch {event.epoch}/{event.epochs}",
        f"discrepancy {event.value:.4g}",
        f"2nd diff {'-' if event.second_diff is None else format(event.second_diff, '.4g')}",
    ]
    if event.threshold is not None:
        parts.append(f"(threshold {event.threshold:.4g})")
    if event.truncated:
        parts.append("<- truncated here: distillation stopped")
    return "  ".join(parts)


class HeadlessReporter:
    """Renders events for a terminal or a pipe; ``json_mode`` adds JSON lines on stdout."""

    def __init__(
        self,
        json_mode: bool = False,
        out: IO[str] | None = None,
        err: IO[str] | None = None,
        interval: float = 5.0,
    ) -> None:
        self.json_mode = json_mode
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.interval = interval
        self._last_line = 0.0
        self._progress: Any = None
        self._task: Any = None
        self._total = 0
        self._threshold: float | None = None  # the distillation's, once its t0 epochs fixed it
        if self.err.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self.err),
                transient=False,
            )

    def say(self, text: str) -> None:
        if self._progress is not None:
            self._progress.console.print(text, markup=False, highlight=False)
        else:
            print(text, file=self.err, flush=True)

    def __call__(self, event: Event) -> None:
        if self.json_mode:
            print(json.dumps(event.to_dict()), file=self.out, flush=True)
        if isinstance(event, Phase) and event.status == "start":
            self._total = int(event.info.get("steps", 0))
            details = ", ".join(f"{k}={v}" for k, v in event.info.items() if v not in ("", None))
            self.say(f"== {event.name}: {details}")
            if self._progress is not None and self._total:
                self._progress.start()
                self._task = self._progress.add_task(event.name, total=self._total, status="")
        elif isinstance(event, Metrics):
            self._on_metrics(event)
        elif isinstance(event, Discrepancy):
            self._on_discrepancy(event)
        elif isinstance(event, Log) and event.level == PROGRESS:
            self._on_progress(event)
        elif isinstance(event, Log):
            self.say(("warning: " if event.level == "warning" else "") + event.message)
        elif isinstance(event, Error):
            self.say(f"wmtui: error: {event.message}")
        elif isinstance(event, Checkpoint):
            pass  # acknowledged through a Log line already
        elif isinstance(event, Done):
            self.close()
            if event.status != "failed":  # a failure was already said, as the last line
                acc = event.summary.get("test_acc")
                tail = f", test accuracy {percent(acc)}" if isinstance(acc, float) else ""
                self.say(f"== {event.status}{tail}")

    def _on_progress(self, event: Log) -> None:
        """A wait between readings, at most a line every ``interval`` seconds (its end
        always: the line says what was done)."""
        now = time.monotonic()
        if "(100%)" in event.message or now - self._last_line >= self.interval:
            self._last_line = now
            self.say(event.message)

    def _on_metrics(self, event: Metrics) -> None:
        if self._progress is not None and self._task is not None:
            status = f"loss {event.loss:.3f}"
            if event.test_acc is not None:
                status += f" acc {percent(event.test_acc)}"
            self._progress.update(self._task, completed=event.step, status=status)
            return
        now = time.monotonic()
        if event.test_acc is not None or now - self._last_line >= self.interval:
            self._last_line = now
            self.say(metrics_line(event))

    def _on_discrepancy(self, event: Discrepancy) -> None:
        """One line an epoch, at most every ``interval`` seconds, but always the epochs that
        tell: the first, the first with a threshold, the truncated one and the last."""
        now = time.monotonic()
        telling = (
            event.epoch <= 1
            or event.truncated
            or event.epoch >= event.epochs
            or (event.threshold is not None and self._threshold is None)
        )
        self._threshold = event.threshold
        if telling or now - self._last_line >= self.interval:
            self._last_line = now
            self.say(discrepancy_line(event))

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._task = None
