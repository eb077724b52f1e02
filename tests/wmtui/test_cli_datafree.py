"""``wmtui embed --scheme datafree`` from the command line: refusals before anything is
written, and the live distillation in the JSON stream."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wmtui.cli.main import app

runner = CliRunner()
DATA = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "128", "--device", "cpu"]
TINY = ["--count", "10", "--samples", "2", "--dfad-epochs", "4", "--dfad-iters", "2"]
TINY += ["--dfad-batch", "16", "--generator-width", "4", "--epochs", "2", "--batch-size", "30"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "run"
    result = runner.invoke(app, ["train", *DATA, "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_json_stream_carries_the_distillation_then_the_injection(
    clean: Path, tmp_path: Path
) -> None:
    out = tmp_path / "wm"
    result = runner.invoke(
        app,
        ["embed", "--scheme", "datafree", "--from", str(clean), *TINY, "--out", str(out), "--json"],
    )
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    discrepancies = [e for e in events if e["event"] == "discrepancy"]
    assert [e["epoch"] for e in discrepancies] == list(range(1, len(discrepancies) + 1))
    assert discrepancies[2]["second_diff"] is not None and discrepancies[0]["second_diff"] is None
    phases = [(e["name"], e["status"]) for e in events if e["event"] == "phase"]
    assert phases.index(("distill", "end")) < phases.index(("embed", "start"))
    embedded = [e for e in events if e["event"] == "metrics" and e["phase"] == "embed"]
    assert embedded and "key" in embedded[-1]["retention"]
    assert (out / "generator.safetensors").is_file() and (out / "key").is_dir()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--count", "0"], "count: must be >= 1"),
        (["--lam", "-1"], "lam: must be >= 0"),
        (["--t0", "0"], "t0: must be >= 1"),
        (["--trigger", "stripes"], "--trigger 'stripes'"),
        (["--adjust", "everything"], "--adjust 'everything'"),
    ],
)
def test_bad_scheme_values_are_one_line_and_write_nothing(
    clean: Path, tmp_path: Path, flags: list[str], message: str
) -> None:
    out = tmp_path / "wm"
    args = ["embed", "--scheme", "datafree", "--from", str(clean), *DATA, *flags]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_no_from_or_a_broken_from_run_is_refused(clean: Path, tmp_path: Path) -> None:
    out = tmp_path / "wm"
    missing = runner.invoke(app, ["embed", "--scheme", "datafree", *DATA, "--out", str(out)])
    assert missing.exit_code == 2 and "needs --from RUN" in missing.output
    gone = runner.invoke(
        app, ["embed", "--scheme", "datafree", "--from", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert gone.exit_code == 2 and "Traceback" not in gone.output
    broken = tmp_path / "broken"
    broken.mkdir()
    for item in clean.iterdir():
        if item.is_file():
            (broken / item.name).write_bytes(item.read_bytes())
    (broken / "model.safetensors").write_bytes(b"not a model")
    corrupt = runner.invoke(
        app, ["embed", "--scheme", "datafree", "--from", str(broken), "--out", str(out)]
    )
    assert corrupt.exit_code == 2 and "Traceback" not in corrupt.output
    assert len(corrupt.output.strip().splitlines()) == 1
    assert not out.exists()
