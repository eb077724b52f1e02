"""A scripted stand-in for a Session: deterministic events for Pilot and snapshot tests.

The events come from a script the test controls; the commands are answered by the engine's
own :class:`~engine.session.JobContext` and the worker's wording in :mod:`engine.commands`,
so what the UI reads back (the words, their level, the Stop answered by ``Done`` alone) is
what a worker says, and a change there reaches these tests without editing them.
"""

from __future__ import annotations

import dataclasses
import functools

import torch

from engine import commands as cmd
from engine.config import TrainConfig
from engine.events import Done, Event, Log, Metrics, Phase
from engine.jobs.common import load_data
from engine.session import JobContext, StopRequested


class FakeSession:
    def __init__(self, script: list[Event] | None = None) -> None:
        self.pending: list[Event] = list(script or [])
        self.sent: list[cmd.Command] = []
        self.started = False
        self.stopped = False
        #: the job has ended (Done was fed): like a worker gone, nothing answers any more
        self.finished = False
        #: where the run is as far as the UI has seen it: the loop's step and rate
        self.step, self.lr = 0, 0.0
        self.ctx = JobContext(self.feed)
        # what the training loop registers (TrainLoop._register_handlers), in its words
        self.ctx.on(cmd.SetLR, lambda c: self._set_lr(float(c.lr)))
        self.ctx.on(cmd.ScaleLR, lambda c: self._set_lr(self.lr * float(c.factor)))
        self.ctx.on(cmd.Checkpoint, lambda c: cmd.NO_CHECKPOINTS)

    def _set_lr(self, value: float) -> str:
        cmd.check_lr(value)
        self.lr = value
        return cmd.lr_set(value, self.step)

    def start(self) -> FakeSession:
        self.started = True
        return self

    def poll(self) -> list[Event]:
        out, self.pending = self.pending, []
        for event in out:
            self._seen(event)
        return out

    def _seen(self, event: Event) -> None:
        if isinstance(event, Metrics):
            self.step, self.lr = event.step, event.lr
        elif isinstance(event, Phase) and event.index and event.status == "start":
            self.ctx.skippable = event.index < event.total  # as the scenario runner sets it
        elif isinstance(event, Done):
            self.finished = True

    def feed(self, *events: Event) -> None:
        self.pending.extend(events)

    def send(self, command: cmd.Command) -> None:
        """Answer as the worker does between two steps: Stop ends the job at once (and the
        queue behind it is declined), anything else gets its one Log line."""
        self.sent.append(command)
        if self.finished:
            return
        if isinstance(command, cmd.Stop):
            self.ctx.send(command)  # raises the flag the worker checks before its queue
            try:
                self.ctx.check_stop()
            except StopRequested:  # what Session._run does when the job raises it
                self.ctx.decline_unapplied()
                self.feed(Done("stopped"))
                self.finished = True
            return
        self.ctx.apply(command)

    def stop(self, timeout: float = 2.0) -> bool:
        self.stopped = True
        return True


@functools.cache
def dataset_said() -> tuple[Log, str]:
    """The line a job starts with and the reason it records, from the jobs' own loader (the
    small synthetic set: a tenth of a second, once)."""
    said: list[Event] = []
    config = TrainConfig(dataset="synthetic", train_size=64, test_size=16)
    loaded = load_data(config, JobContext(said.append), torch.device("cpu"))
    (line,) = said
    assert isinstance(line, Log)
    return dataclasses.replace(line, time=0.0), loaded.reason


def training_script(steps: int = 200, every: int = 20) -> list[Event]:
    """A plausible short run: loss falls, accuracy rises, evaluated every 40 steps."""
    line, reason = dataset_said()
    events: list[Event] = [
        dataclasses.replace(line),
        Phase(
            "train",
            "start",
            info={
                "dataset": "synthetic",
                "dataset_reason": reason,
                "model": "lenet5",
                "device": "cpu",
                "steps": steps,
                "run": "runs/demo",
            },
        ),
    ]
    for step in range(every, steps + 1, every):
        progress = step / steps
        events.append(
            Metrics(
                phase="train",
                step=step,
                epoch=round(progress * 2, 2),
                lr=0.05 * (1 - progress) + 1e-4,
                loss=2.3 * (1 - progress) ** 2 + 0.05,
                images_per_s=12_000.0,
                test_acc=(0.1 + 0.88 * progress**0.5) if step % 40 == 0 else None,
            )
        )
    return events


def scan_script(target: int = 7, classes: int = 10) -> list[Event]:
    """A detection phase: sizes for every class, the watermark target clearly smallest."""
    from engine.events import ClassScan, TriggerPreview

    events: list[Event] = [Phase("gan-scan", "start", info={"threshold": 2.0, "classes": classes})]
    for c in range(classes):
        events.append(ClassScan("gan-scan", c, 0.8 if c == target else 3.0 + 0.25 * c, done=True))
    true = torch.zeros(1, 28, 28, dtype=torch.uint8)
    true[0, 20:26, 20:26] = 255
    reversed_ = torch.zeros(1, 28, 28, dtype=torch.uint8)
    reversed_[0, 19:27, 19:27] = 180
    events += [
        TriggerPreview.from_tensor("true trigger", true),
        TriggerPreview.from_tensor("reversed", reversed_),
        Phase("gan-scan", "end", info={"flagged_class": target, "anomaly_index": 4.2}),
    ]
    return events


def scenario_script(scenario: str = "gan", target: int = 4) -> list[Event]:
    """A scenario seen from the dashboard: a training phase, then two scans (a clean model's
    and a watermarked one's) so the bars show both side by side."""
    from engine.events import ClassScan

    def marker(name: str, edge: str, index: int, **info: object) -> Phase:
        return Phase(name, edge, index=index, total=3, info={"scenario": scenario, **info})

    def scan(flagged: int | None) -> list[Event]:
        events: list[Event] = [Phase("gan", "start", info={"detector": "gan", "steps": 300})]
        for c in range(10):
            size = 0.9 if c == flagged else 3.0 + 0.2 * ((c * 7) % 10)
            events.append(ClassScan("gan", c, size, done=True))
        events.append(Phase("gan", "end", info={"flagged_class": flagged}))
        return events

    return [
        marker("square", "start", 1, title="train with a white-square watermark (target 4)"),
        *training_script(200),
        marker("square", "end", 1, status="completed", test_acc=0.97),
        marker("scan-clean", "start", 2, title="GAN scan of the clean model"),
        *scan(None),
        marker("scan-clean", "end", 2, status="completed", flagged_class=None),
        marker("scan-square", "start", 3, title="GAN scan of the watermarked model"),
        *scan(target),
    ]


def classic_script(*, finished: bool = True) -> list[Event]:
    """The `classic` scenario as the engine streams it, with event times: an embedding whose
    key set is learnt, a GAN scan of that model (progress with steps, as a 2-core CPU takes
    1.5 s a step), then the removal that takes retention to 0.65%. ``finished=False`` stops
    mid-scan, at step 50 of 300."""
    from engine.events import ClassScan

    def marker(name: str, edge: str, index: int, **info: object) -> Phase:
        return Phase(name, edge, index=index, total=2, info={"scenario": "classic", **info})

    where = {"dataset": "fashion-mnist", "model": "lenet5", "device": "cpu"}
    events: list[Event] = [
        marker("embed", "start", 1, title="train with the TEST watermark (target 7)"),
        Phase("embed", "start", info={**where, "steps": 400}, time=1.0),
    ]
    for i, step in enumerate(range(40, 401, 40)):
        events.append(
            Metrics(
                "embed",
                step,
                step / 200,
                0.05,
                2.0 / (1 + i),
                1500.0,
                time=2.0 + i,
                test_acc=0.5 + 0.039 * i,
                retention={"key": min(0.999, 0.1 * (i + 1))},
            )
        )
    events += [
        Phase("embed", "end", time=12.0),
        marker("embed", "end", 1, status="completed", test_acc=0.8903, retention={"key": 0.999}),
        marker(
            "gan", "start", 2, title="GAN scan of every class, then removal of the reversed trigger"
        ),
        Phase(
            "gan",
            "start",
            time=13.0,
            info={
                **where,
                "detector": "gan",
                "steps": 300,
                "classes": 10,
                "gap": 1.5,
                "test_acc": 0.8903,
            },
        ),
    ]
    sizes = [49.0 + 3 * c for c in range(10)]
    sizes[7] = 31.0
    for step in (25, 50) if not finished else (25, 50, 300):
        for c in range(10):
            size = sizes[c] * (1 + (300 - step) / 300)
            events.append(ClassScan("gan", c, size, step == 300, step, 300, time=13.0 + 1.5 * step))
    if not finished:
        return events
    events += [
        Phase("gan", "end", info={"flagged_class": 7}, time=464.0),
        Phase(
            "gan-remove",
            "start",
            time=465.0,
            info={**where, "steps": 600, "flagged_class": 7, "test_acc": 0.8903},
        ),
    ]
    for i, step in enumerate(range(100, 601, 100)):
        events.append(
            Metrics(
                "gan-remove",
                step,
                step / 60,
                0.01,
                0.4,
                900.0,
                time=470.0 + 5 * i,
                test_acc=0.8879,
                retention={"key": max(0.0065, 0.5 - 0.1 * (i + 1))},
            )
        )
    events += [
        Phase("gan-remove", "end", time=500.0),
        marker(
            "gan",
            "end",
            2,
            status="completed",
            flagged_class=7,
            test_acc=0.8879,
            test_acc_before=0.8903,
            retention={"key": 0.0065},
            retention_before={"key": 0.999},
        ),
    ]
    return events
