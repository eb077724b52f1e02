"""`a` and `d` mid-phase: a follow-up job runs on the model in hand at this step, then the
phase goes on; the scenario is not ended, and each folder says what it holds."""

from __future__ import annotations

from pathlib import Path

from engine import commands as cmd
from engine.events import ClassScan, Log, Metrics, Phase
from engine.runs import RunDir
from tests.engine.test_scenarios import ATTACK, run_scenario, tiny

SCAN = {"scan_steps": 8, "batch": 32, "images": 200, "val_images": 100, "remove": False}


def test_a_scan_mid_phase_works_on_the_model_in_hand_and_the_scenario_goes_on(
    tmp_path: Path,
) -> None:
    sent: list[int] = []
    scanned: list[bool] = []

    def steer(session, event) -> None:
        if isinstance(event, Metrics) and event.phase == "embed" and event.step >= 4 and not sent:
            followup = cmd.Followup("detect", "neural-cleanse", SCAN, {"data_fraction": 0.5})
            session.send(followup)
            sent.append(event.step)
        if isinstance(event, ClassScan) and not scanned:
            scanned.append(True)
            session.send(cmd.SetLR(0.0021))  # taken by the embed loop once the scan is done

    raw = tiny([{"name": "embed", "kind": "embed", "scheme": "pattern"}, ATTACK], epochs=2)
    session, events = run_scenario(raw, tmp_path / "s", steer)
    assert session.status == "completed"
    summary = RunDir(tmp_path / "s").summary()
    assert [p["status"] for p in summary["phases"]] == ["completed", "completed"]

    snapshots = sorted((tmp_path / "s").glob("snapshot-embed-step*"))
    scans = sorted((tmp_path / "s").glob("neural-cleanse-*"))
    assert len(snapshots) == 1 and len(scans) == 1
    snapshot = RunDir.open(snapshots[0]).manifest()
    assert snapshot["source_run"] == str((tmp_path / "s" / "01-embed").resolve())
    step = snapshot["snapshot"]["step"]
    assert step >= sent[0]  # the model as it was when the worker took the command
    scan = RunDir(scans[0]).summary()
    assert scan["status"] == "completed" and scan["source_run"] == str(snapshots[0])
    assert len(scan["perturbation_sizes"]) == 10
    # the scan's events went to its own folder and to the stream, between embed steps
    scan_at = next(i for i, e in enumerate(events) if isinstance(e, ClassScan))
    later = [e for e in events[scan_at:] if isinstance(e, Metrics) and e.phase == "embed"]
    assert later and later[0].step > step  # training went on after the scan
    assert (scans[0] / "events.jsonl").read_text().count('"class_scan"') >= 10
    logs = [e.message for e in events if isinstance(e, Log)]
    assert any("back to embed" in m for m in logs)
    # the embed loop keeps its handlers after the nested job (whose own loop ends by
    # removing the learning-rate handlers it registered)
    assert any("0.0021" in m for m in logs) and not any("ignored" in m for m in logs)


def test_a_bad_followup_is_refused_and_writes_nothing(
    tmp_path: Path,
) -> None:
    def steer(session, event) -> None:
        if isinstance(event, Phase) and event.index == 1 and event.status == "start":
            session.send(cmd.Followup("detect", "no-such-scan", {}, {}))
        if isinstance(event, Metrics) and event.step == 1:
            session.send(cmd.Followup("attack", "ft-basic", {"lr": -1.0}, {}))

    raw = tiny([{"name": "embed", "kind": "embed", "scheme": "pattern"}])
    session, events = run_scenario(raw, tmp_path / "s", steer)
    assert session.status == "completed"
    refusals = [e.message for e in events if isinstance(e, Log) and " refused: " in e.message]
    assert len(refusals) == 2, refusals
    assert "unknown detection method 'no-such-scan'" in refusals[0]
    assert "lr: must be > 0.0" in refusals[1]
    assert not list((tmp_path / "s").glob("snapshot-*"))
