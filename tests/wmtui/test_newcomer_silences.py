"""No silent waits: rendering the synthetic digits, verifying the keys at the end of an
embedding and the first distillation epoch each say what they do and how far they are, and
the dashboard's status line shows it (the event log is not flooded with it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.config import TrainConfig
from engine.events import Event, Log, Metrics, Phase, event_from_dict
from engine.jobs.common import load_data
from engine.session import JobContext
from wmtui.cli.main import app
from wmtui.tui.state import DashboardState
from wmtui.tui.status import status_line

runner = CliRunner()
DATA = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "128", "--device", "cpu"]


def progress_lines(events: list[Event]) -> list[str]:
    return [e.message for e in events if isinstance(e, Log) and e.level == "progress"]


@pytest.fixture
def talkative(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every wait reports at once (by default a task stays quiet for its first second)."""
    from engine import progress

    monkeypatch.setattr(progress, "AFTER", 0.0)
    monkeypatch.setattr(progress, "EVERY", 0.0)


def test_rendering_the_synthetic_digits_reports_progress(tmp_path: Path, talkative) -> None:
    events: list[Event] = []
    config = TrainConfig(
        dataset="synthetic", data_dir=str(tmp_path), train_size=1500, test_size=100
    )
    load_data(config, JobContext(events.append), torch.device("cpu"))
    said = progress_lines(events)
    assert said and all("rendering synthetic digits" in line for line in said), said
    assert said[-1].endswith("1,600/1,600 (100%)"), said
    events.clear()
    load_data(config, JobContext(events.append), torch.device("cpu"))  # cached: nothing to say
    assert not progress_lines(events)


def test_the_dashboard_shows_progress_in_the_status_line_not_the_log() -> None:
    state = DashboardState()
    state.apply(Log("rendering synthetic digits: 3,000/70,000 (4%)", "progress"))
    assert "rendering synthetic digits: 3,000/70,000" in status_line(state)
    assert not any("rendering" in line for line in state.take_log())
    state.apply(Phase("train", "start", info={"steps": 10}))
    state.apply(Metrics("train", 1, 0.1, 0.1, 1.0, 100.0))
    assert "rendering" not in status_line(state) and "step 1/10" in status_line(state)


def json_events(output: str) -> list[Event]:
    return [event_from_dict(json.loads(x)) for x in output.splitlines() if x.startswith("{")]


def test_the_end_of_an_embedding_says_it_verifies(tmp_path: Path) -> None:
    args = ["embed", *DATA, "--epochs", "1", "--out", str(tmp_path / "run"), "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    events = json_events(result.output)
    last_metrics = max(i for i, e in enumerate(events) if isinstance(e, Metrics))
    said = progress_lines(events[last_metrics:])
    assert any("verifying key set 1/1" in line for line in said), said


@pytest.mark.parametrize("epochs", [4])
def test_the_first_distillation_epoch_reports_its_iterations(
    tmp_path: Path, epochs: int, talkative
) -> None:
    clean, out = tmp_path / "clean", tmp_path / "wm"
    assert runner.invoke(app, ["train", *DATA, "--epochs", "1", "--out", str(clean)]).exit_code == 0
    flags = ["--count", "10", "--samples", "2", "--dfad-epochs", str(epochs), "--dfad-iters", "3"]
    flags += ["--dfad-batch", "16", "--generator-width", "4", "--epochs", "2", "--batch-size", "30"]
    args = ["embed", "--scheme", "datafree", "--from", str(clean), *flags, "--out", str(out)]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    said = progress_lines(json_events(result.output))
    assert any(line.startswith(f"distillation epoch 1/{epochs}, iterations:") for line in said)


def test_a_quick_render_stays_quiet(tmp_path: Path) -> None:
    events: list[Event] = []
    config = TrainConfig(dataset="synthetic", data_dir=str(tmp_path), train_size=64, test_size=16)
    load_data(config, JobContext(events.append), torch.device("cpu"))
    assert not progress_lines(events)
