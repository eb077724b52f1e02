"""The playground's scripted session answers commands as a real worker does: the same
sequence sent to a Session running the one training loop and to ``FakeSession`` is answered
with the same lines (numbers aside: the step the worker is at differs)."""

from __future__ import annotations

import re
import threading

import torch
from torch import nn

from engine import commands as cmd
from engine.events import Done, Event, Log
from engine.session import JobContext, Session
from engine.training import OptimSettings, Source, TrainLoop
from tests.wmtui.fakes import FakeSession, training_script

COMMANDS: list[cmd.Command] = [
    cmd.Pause(),
    cmd.Resume(),
    cmd.Resume(),
    cmd.ScaleLR(2.0),
    cmd.SetLR(0.02),
    cmd.SetLR(-1.0),
    cmd.SetTrigger("next"),
    cmd.SetTargetLabel(3),
    cmd.SkipPhase(),
    cmd.Checkpoint(),
    cmd.Stop(),
]


def answers(events: list[Event]) -> list[tuple[str, str, str]]:
    """What the UI reads back, with numbers masked."""
    out = []
    for event in events:
        if isinstance(event, Log):
            out.append(("log", event.level, re.sub(r"-?\d[\d.e+-]*", "#", event.message)))
        elif isinstance(event, Done):
            out.append(("done", event.status, ""))
    return out


def loop_job(ctx: JobContext) -> dict:
    """The one training loop on a tiny model, long enough to be stopped."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))
    x = torch.randint(0, 256, (64, 1, 4, 4), dtype=torch.uint8)
    y = torch.randint(0, 4, (64,))
    loop = TrainLoop(
        model,
        [Source("owner", x, 16, y=y)],
        OptimSettings(),
        ctx=ctx,
        phase="train",
        total_steps=10**9,
        eval_every=10**9,
    )
    loop.run()
    return {}


def test_fake_session_answers_in_the_workers_words() -> None:
    seen: list[Event] = []
    answered = threading.Condition()

    def sink(event: Event) -> None:
        with answered:
            seen.append(event)
            answered.notify_all()

    def count() -> int:
        return sum(isinstance(e, Log | Done) for e in seen)

    session = Session(loop_job, sinks=[sink]).start()
    try:
        for command in COMMANDS:  # one at a time, each after the last one's answer
            before = count()
            session.send(command)
            with answered:
                assert answered.wait_for(lambda b=before: count() > b, timeout=60), command
        session.join(60)
    finally:
        session.stop()
    fake = FakeSession(training_script(40))
    fake.poll()  # the UI has seen the run so far: its step and rate
    for command in COMMANDS:
        fake.send(command)
    fake.send(cmd.Pause())  # after the end: nobody answers, as for a worker gone
    real = answers(seen)
    assert real == answers(fake.poll())
    assert real[-1] == ("done", "stopped", "") and real[0] == ("log", "info", cmd.PAUSED)
    assert len(real) == len(COMMANDS)  # every command answered once, Stop by Done
