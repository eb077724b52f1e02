"""Verdicts a newcomer can read: a dual embedding too small to verify warns as it ends, and
`verify --claim` says first which condition failed (not after "retention 100.00%")."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from wmtui.cli.main import app

runner = CliRunner()
SMALL = ["--dataset", "synthetic", "--train-size", "128", "--test-size", "256", "--epochs", "1"]


@pytest.fixture(scope="module")
def small_dual(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("dual")
    keys, out = root / "keys", root / "run"
    assert runner.invoke(app, ["keygen", "--out", str(keys), "--bits", "2048"]).exit_code == 0
    args = ["embed", "--scheme", "dual", "--owner", "a", "--signing-key", str(keys), *SMALL]
    result = runner.invoke(app, [*args, "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_a_dual_embedding_that_will_not_verify_warns(small_dual) -> None:
    _, output = small_dual
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert any("null accuracy" in line and "below" in line for line in warnings), output
    assert any("test accuracy" in line and "low" in line for line in warnings), output
    verdict = [line for line in output.splitlines() if "NOT verified" in line]
    assert verdict, output


def test_verify_says_the_failing_condition_first(small_dual) -> None:
    run, _ = small_dual
    result = runner.invoke(app, ["verify", "--run", str(run), "--claim", str(run / "claim.json")])
    assert result.exit_code == 1
    first = result.output.splitlines()[0]
    assert first.startswith("NOT VERIFIED") and "null accuracy" in first and "below T 50%" in first


DATA = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "128", "--device", "cpu"]
DATAFREE = ["--count", "10", "--samples", "2", "--dfad-epochs", "4", "--dfad-iters", "2"]
DATAFREE += ["--dfad-batch", "16", "--generator-width", "4", "--epochs", "2", "--batch-size", "30"]


def test_the_data_free_verdict_reaches_the_dashboard(tmp_path: Path) -> None:
    from wmtui.tui.replay import load_events
    from wmtui.tui.state import DashboardState

    clean, out = tmp_path / "clean", tmp_path / "wm"
    trained = runner.invoke(app, ["train", *DATA, "--epochs", "1", "--out", str(clean)])
    assert trained.exit_code == 0, trained.output
    args = ["embed", "--scheme", "datafree", "--from", str(clean), *DATAFREE, "--out", str(out)]
    assert runner.invoke(app, args).exit_code == 0
    state = DashboardState()
    for event in load_events(out)[0]:
        state.apply(event)
    shown = [line for line in state.take_log() if "key ownership:" in line]
    assert shown and ("p-value" in shown[-1] or "NOT verified" in shown[-1]), shown
