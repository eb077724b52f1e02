"""A scripted stand-in for a Session: deterministic events for Pilot and snapshot tests."""

from __future__ import annotations

from engine import commands as cmd
from engine.events import Done, Event, Log, Metrics, Phase


class FakeSession:
    def __init__(self, script: list[Event] | None = None) -> None:
        self.pending: list[Event] = list(script or [])
        self.sent: list[cmd.Command] = []
        self.started = False
        self.stopped = False

    def start(self) -> FakeSession:
        self.started = True
        return self

    def poll(self) -> list[Event]:
        out, self.pending = self.pending, []
        return out

    def feed(self, *events: Event) -> None:
        self.pending.extend(events)

    def send(self, command: cmd.Command) -> None:
        """Acknowledge like the real worker does, so the UI sees the same stream."""
        self.sent.append(command)
        if isinstance(command, cmd.Pause):
            self.feed(Log("paused"))
        elif isinstance(command, cmd.Resume):
            self.feed(Log("resumed"))
        elif isinstance(command, cmd.ScaleLR):
            self.feed(Log(f"learning rate scaled by {command.factor}"))
        elif isinstance(command, cmd.Stop):
            self.feed(Log("stop requested: ending after this step"), Done("stopped"))

    def stop(self, timeout: float = 2.0) -> bool:
        self.stopped = True
        return True


def training_script(steps: int = 200, every: int = 20) -> list[Event]:
    """A plausible short run: loss falls, accuracy rises, evaluated every 40 steps."""
    events: list[Event] = [
        Log("dataset: synthetic (asked for)"),
        Phase(
            "train",
            "start",
            info={
                "dataset": "synthetic",
                "dataset_reason": "synthetic (asked for)",
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
    import torch

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
