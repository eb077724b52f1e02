"""``wmtui attack --attack overwriting`` and ``--attack neural-laundering``: bad params are
one line on stderr, exit 2, and no run folder."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from wmtui.cli import app
from wmtui.cli import attacks as cli_attacks

cli_attacks.register(app)
runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--attack", "overwriting", "--scheme", "patern"], "did you mean 'pattern'"),
        (["--attack", "overwriting", "--labels", "guess"], "choose one of: predicted, true"),
        (["--attack", "overwriting", "--data-fraction", "0"], "needs labelled data"),
        (
            ["--attack", "overwriting", "--data-fraction", "0.004"],
            "overwriting: the attacker's pattern key on its 4 images",
        ),
        (["--attack", "neural-laundering", "--ct", "-1"], "ct: must be >= 0"),
        (["--attack", "neural-laundering", "--dt", "x"], "dt"),
        (["--attack", "neural-laundering", "--layers", "middle"], "choose one of: all, late"),
        (["--attack", "neural-laundering", "--trigger", "any"], "flagged, smallest"),
        (["--attack", "neural-laundering", "--scan-steps", "0"], "scan-steps: must be >= 1"),
        (["--attack", "neural-laundering", "--inits", "bogus"], "inits: a comma list"),
        (["--attack", "neural-laundering", "--data-fraction", "0"], "needs labelled data"),
    ],
)
def test_bad_params_are_one_line_exit_2_and_nothing_written(
    pattern_run, tmp_path, args, fragment
) -> None:
    out = tmp_path / "never"
    result = runner.invoke(
        app, ["attack", *args, "--run", str(pattern_run), "--device", "cpu", "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error:"), result.stderr
    assert fragment in lines[0]
    assert not out.exists()
