"""`wmtui threshold`: bad input is one line, exit 2 and nothing written; a computed
threshold is printed with where it is cached, and `wmtui verify` shows its verdict."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wmtui.cli.main import app

runner = CliRunner()
TINY = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "128", "--epochs", "1"]


def cache() -> Path:
    return Path(os.environ["WMTUI_CACHE_DIR"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scheme", "patern"], "unknown scheme 'patern' (did you mean 'pattern'?)"),
        (["--scheme", "pattern", "--null-models", "1"], "null-models: must be >= 2, got 1"),
        (["--scheme", "pattern", "--p", "0"], "p: must be > 0.0, got 0"),
        (["--scheme", "pattern", "--p", "1.5"], "p: must be < 1.0, got 1.5"),
        (["--scheme", "pattern", "--null-arch", "lenet"], "unknown model 'lenet'"),
        ([], "threshold needs a scheme (--scheme NAME)"),
        (["--scheme", "pattern", "--dataset", "mnits"], "mnist"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, args, message) -> None:
    out = tmp_path / "out"
    base = TINY[2:] if "--dataset" in args else TINY
    result = runner.invoke(app, ["threshold", *base, *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error: "), result.stderr
    assert message in lines[0] and "Traceback" not in result.output
    assert not out.exists()
    assert not any(cache().rglob("*"))


def test_threshold_prints_its_line_and_verify_shows_the_verdict(pattern_run: Path) -> None:
    before = runner.invoke(app, ["verify", "--run", str(pattern_run)])
    assert "SoK threshold: none cached;" in before.output
    assert "wmtui threshold --scheme pattern --dataset synthetic --model lenet5" in before.output
    result = runner.invoke(
        app, ["threshold", "--scheme", "pattern", *TINY, "--null-models", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    final = json.loads(result.stdout.strip().splitlines()[-1])
    record = final["record"]
    assert final["event"] == "threshold" and record["null_models"] == 2
    assert Path(final["cached_at"]).is_file() and Path(final["cached_at"]).is_relative_to(cache())
    human = runner.invoke(
        app, ["threshold", "--scheme", "pattern", *TINY, "--null-models", "2"]
    ).output
    assert "0 trained, 2 reused" in human and f"cached at {final['cached_at']}" in human
    after = runner.invoke(app, ["verify", "--run", str(pattern_run)])
    assert after.exit_code == before.exit_code  # the exit code stays on the p-value
    line = next(x for x in after.output.splitlines() if "SoK threshold:" in x)
    assert line.startswith("  SoK threshold: marked (key accuracy ")
    assert f"threshold {100 * record['threshold']:.2f}%" in line


def test_a_white_box_scheme_has_no_threshold_and_trains_no_null_model() -> None:
    """uchida is read from the weights, never queried: no null model can score it, so the
    phase says how it is judged instead (a recipe over every scheme runs on past it)."""
    result = runner.invoke(app, ["threshold", "--scheme", "uchida", *TINY, "--null-models", "2"])
    assert result.exit_code == 0, result.output
    assert "threshold uchida: uchida is read from the model, not queried" in result.output
    assert "judged by its BER" in result.output
    assert not any(cache().rglob("*"))  # no null model trained, nothing cached
