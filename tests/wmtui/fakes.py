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
