"""The live query counter: every reading of an attack's training carries the answers the
suspect has given so far, the phase start names the budget's cap, and answers given between
trainings (a transfer set labelled up front) are said as throttled progress lines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import progress
from engine.attacks.queries import QueryCounter
from engine.events import Event, Log, Metrics, Phase, event_from_dict
from engine.jobs import JobSpec, run
from engine.jobs.referee import AnsweringReporter, answered_line
from engine.session import JobContext

BATCH, STEPS, EVERY, CAP = 32, 12, 4, 200


def test_every_reading_of_an_extraction_carries_the_answers_so_far(
    pattern_run: Path, tmp_path: Path
) -> None:
    """``distill`` has the suspect answer its transfer set before training, cut to the
    budget's cap: every reading carries what was spent, which the cost then reports."""
    events: list[Event] = []
    spec = JobSpec.attack(
        "distill",
        run=pattern_run,
        out=tmp_path / "stolen",
        device="cpu",
        eval_every=EVERY,
        data_fraction=0.0,
        unlabeled="synthetic",
        unlabeled_count=256,
        steps=STEPS,
        queries=CAP,
        batch=BATCH,
    )
    result = run(spec, events.append)
    assert result.status == "completed"
    start = next(e for e in events if isinstance(e, Phase) and e.name == "distill")
    assert start.info["query_cap"] == CAP
    readings = [e for e in events if isinstance(e, Metrics) and e.phase == "distill"]
    assert len(readings) >= STEPS // EVERY
    assert {e.queries for e in readings} == {CAP} == {result.summary["cost"]["queries"]}
    # recorded and read back (replay, reports): the count survives the JSON round trip
    recorded = (tmp_path / "stolen" / "metrics.jsonl").read_text().splitlines()
    assert event_from_dict(json.loads(recorded[-1])).queries == CAP


def test_a_weight_attacks_readings_count_no_answers(pattern_run: Path) -> None:
    """Fine-tuning on true labels asks the suspect nothing: its readings say 0, not None."""
    events: list[Event] = []
    spec = JobSpec.attack(
        "ft-basic", run=pattern_run, device="cpu", eval_every=EVERY, data_fraction=0.2, steps=4
    )
    assert run(spec, events.append).status == "completed"
    readings = [e for e in events if isinstance(e, Metrics)]
    assert readings and {e.queries for e in readings} == {0}


def test_a_reading_without_a_count_reads_back_as_none() -> None:
    """Recordings made before the count was sent, and readings outside attacks."""
    old = {"event": "metrics", "phase": "embed", "step": 3, "epoch": 0.1, "lr": 0.1}
    event = event_from_dict({**old, "loss": 1.0, "images_per_s": 10.0, "time": 1.0})
    assert isinstance(event, Metrics) and event.queries is None


def test_answers_between_trainings_are_said_at_most_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("engine.jobs.referee.time.monotonic", lambda: now[0])
    said: list[Event] = []
    reporter = AnsweringReporter(JobContext(said.append))
    counter = QueryCounter(20_000)
    counter.listener = reporter
    for _ in range(20):  # 1,000 answers every 0.25 s: five seconds of labelling
        counter.add(1_000)
        now[0] += 0.25
    lines = [e.message for e in said if isinstance(e, Log) and e.level == progress.LEVEL]
    # quiet for the first second, then one line a second at most
    assert 3 <= len(lines) <= 5 and lines[-1] != answered_line(20_000, 20_000)
    reporter.finish()  # a training starts: the count the answering ended at
    lines = [e.message for e in said if isinstance(e, Log)]
    assert lines[-1] == "the suspect answered 20,000 of 20,000 queries"
    reporter.training = True  # a training's readings carry the count: no lines beside them
    counter.cap = 0
    now[0] += 10.0
    counter.add(1_000)
    reporter.finish()  # nothing was said since the last: nothing to end
    assert len([e for e in said if isinstance(e, Log)]) == len(lines)
    assert answered_line(21_000, 0) == "the suspect answered 21,000 queries"
