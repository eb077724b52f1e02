"""What the engine tells people about progress: a scan's steps, command acknowledgements in
words, the scanned model's accuracy at its phase start, and the scenario descriptions."""

from __future__ import annotations

import dataclasses
import inspect

import torch

from engine import commands as cmd
from engine.attacks.scan import ScanReporter
from engine.events import ClassScan, Event, Log, event_from_dict
from engine.jobs.referee import recorded_test_acc
from engine.runs import RunDir
from engine.session import JobContext
from engine.studies.scenarios import load_scenario, preset_names


def test_scan_reports_carry_the_step_of_the_whole_search() -> None:
    events: list[Event] = []
    report = ScanReporter(JobContext(events.append), "gan", 3, every=25, steps=300)
    for step in range(60):
        report.running(step, torch.tensor([3.0, 1.0, 2.0]))
    report.final([3.0, 1.0, 2.0])
    scans = [e for e in events if isinstance(e, ClassScan)]
    assert [(e.step, e.steps) for e in scans if e.cls == 0] == [(25, 300), (50, 300), (300, 300)]
    assert all(e.done for e in scans if e.step == 300)


def test_a_slow_scan_reports_between_its_every_step_reports() -> None:
    """1.5 s a step on a 2-core CPU made 25 steps 37 s of a frozen "0/10 classes"."""
    events: list[Event] = []
    report = ScanReporter(JobContext(events.append), "gan", 2, every=25, steps=300, quiet=0.0)
    for step in range(3):
        report.running(step, torch.tensor([1.0, 2.0]))
    assert [e.step for e in events if isinstance(e, ClassScan) and e.cls == 0] == [1, 2, 3]


def test_a_class_scan_recorded_before_steps_still_replays() -> None:
    old = {"event": "class_scan", "phase": "gan", "cls": 4, "size": 2.5, "done": True, "time": 3}
    event = event_from_dict(old)
    assert isinstance(event, ClassScan) and (event.step, event.steps) == (0, 0)


def test_every_command_has_a_name_for_people() -> None:
    """Acknowledgements name the action ("trigger switch ignored"), never the class."""
    commands = [
        c
        for _, c in inspect.getmembers(cmd, inspect.isclass)
        if issubclass(c, cmd.Command) and c is not cmd.Command
    ]
    assert len(commands) >= 10
    for command in commands:
        assert command.what != "command" and command.what.islower(), command
        assert command.__name__ not in command.what


def test_ignored_and_refused_commands_are_acknowledged_in_words() -> None:
    from engine.errors import ConfigError

    events: list[Event] = []
    ctx = JobContext(events.append)

    def refuse(command: cmd.SetTargetLabel) -> str:
        raise ConfigError("the dataset has 10 classes (0-9)")

    ctx.on(cmd.SetTargetLabel, refuse)
    for command in (cmd.SetTrigger("square"), cmd.SetTargetLabel(12), cmd.SkipPhase()):
        ctx.send(command)
    ctx.between_steps()
    lines = [e.message for e in events if isinstance(e, Log)]
    assert lines == [
        "trigger switch ignored: the current phase does not take it",
        "target label switch refused: the dataset has 10 classes (0-9)",
        "phase skip ignored: there is no next phase",
    ]


def test_a_phase_on_a_saved_model_names_its_recorded_accuracy(tmp_path) -> None:
    run = RunDir.create(tmp_path / "run", {"config": {}})
    assert recorded_test_acc(run) is None  # no summary yet: not measured, not 0
    run.write_summary({"status": "completed", "test_acc": 0.8903})
    assert recorded_test_acc(run) == 0.8903


def test_scenario_descriptions_say_when_a_scan_also_removes() -> None:
    """The `gan` scenario unlearnt 600 steps while its description only spoke of scans."""
    removing = []
    for name in preset_names():
        scenario = load_scenario(name)
        for phase in scenario.phases:
            params = phase.parsed_params() if phase.kind == "detect" else None
            if params is not None and dataclasses.asdict(params).get("remove"):
                removing.append(name)
                assert "unlearn" in scenario.description, (name, phase.name)
    assert {"classic", "gan"} <= set(removing)


def test_pruning_is_logged_in_words_and_percent() -> None:
    from engine.attacks.prune import pruned_text

    assert pruned_text({"sparsity": 0.6}) == "sparsity 60.00%"  # was "{'sparsity': 0.6}"
    neuron = {"sparsity": 0.1, "units_pruned": 12, "unit_fraction": 0.09375}
    assert pruned_text(neuron) == "sparsity 10.00%, 12 units (9.38%)"
