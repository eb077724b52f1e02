"""``wmtui attack`` with the SoK's modification attacks: bad params are one line, exit 2, and
nothing is written; a good one writes its run."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wmtui.cli import app
from wmtui.cli import attacks as cli_attacks

cli_attacks.register(app)
runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--attack", "weight-quantization", "--bits", "0"], "bits: must be >= 1, got 0"),
        (["--attack", "weight-quantization", "--bits", "17"], "bits: must be <= 16, got 17"),
        (["--attack", "weight-quantization", "--bits", "five"], "bits: expected a number"),
        (["--attack", "adversarial-training", "--eps", "0.1,-1"], "eps: every value"),
        (["--attack", "weight-shifting", "--lmbda", "-1"], "lmbda: must be >= 0.0"),
        (["--attack", "label-smoothing", "--labels", "true", "--data-fraction", "0"], "labelled"),
        (["--attack", "weight-shiftin"], "did you mean 'weight-shifting'"),
    ],
)
def test_bad_params_are_one_line_exit_2_nothing_written(pattern_run, tmp_path, args, fragment):
    out = tmp_path / "never"
    result = runner.invoke(
        app, ["attack", *args, "--run", str(pattern_run), "--device", "cpu", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error:"), result.stderr
    assert fragment in lines[0]
    assert not out.exists()


def test_weight_quantization_at_one_bit_writes_its_run(pattern_run, tmp_path) -> None:
    out = tmp_path / "quantised"
    result = runner.invoke(
        app,
        [
            "attack",
            "--attack",
            "weight-quantization",
            "--bits",
            "1",
            "--tune-epochs",
            "0",
            "--run",
            str(pattern_run),
            "--device",
            "cpu",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 0
    assert summary["info"]["bits"] == 1
