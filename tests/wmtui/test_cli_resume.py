"""``wmtui resume`` on a run that has nothing left to do refuses before writing anything:
a completed run's summary, model and key are what a user came back for."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner

from wmtui.cli import app

runner = CliRunner()
TINY = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "64", "--epochs", "1"]


def fingerprint(run: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(run.rglob("*"))
        if p.is_file()
    }


def test_a_completed_training_run_resumes_only_to_more_epochs(tmp_path: Path) -> None:
    run = tmp_path / "clean"
    assert runner.invoke(app, ["train", *TINY, "--out", str(run)]).exit_code == 0
    before = fingerprint(run)
    refused = runner.invoke(app, ["resume", str(run)])
    assert refused.exit_code == 2
    assert refused.stderr.strip().splitlines() == [
        f"wmtui: error: {run} already completed its 1 epochs; "
        "give --epochs N above 1 to train further"
    ]
    assert fingerprint(run) == before  # the summary still says completed, nothing rewritten
    further = runner.invoke(app, ["resume", str(run), "--epochs", "2"])
    assert further.exit_code == 0, further.output
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2


def test_a_completed_embedding_is_never_restarted(tmp_path: Path) -> None:
    run = tmp_path / "wm"
    assert runner.invoke(app, ["embed", *TINY, "--out", str(run)]).exit_code == 0
    before = fingerprint(run)
    refused = runner.invoke(app, ["resume", str(run)])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == f"wmtui: error: {run} already completed: nothing to resume"
    assert fingerprint(run) == before  # the model and the owner's key are kept


def test_a_bad_thread_count_comes_before_the_run_is_read(tmp_path: Path) -> None:
    result = runner.invoke(app, ["resume", str(tmp_path / "missing"), "--threads", "0"])
    assert result.exit_code == 2
    assert result.stderr.strip() == "wmtui: error: --threads must be between 1 and 1024, got 0"
