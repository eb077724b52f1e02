"""``benchmarks/matrix.py`` on its smoke matrix: phase reuse counted from the run's phase table,
the cost split by phase kind, and bad flags refused. CI runs the in-process measurement only
(the worker and Ray runs start processes: the benchmark's own business)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import matrix as bench


def test_the_smoke_matrix_runs_each_embedding_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert bench.main(["--scale", "smoke", "--measure", "reuse", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    schemes, attacks, seeds, _, _ = bench.SCALES["smoke"]
    in_matrix = 2 * len(schemes) * len(attacks) * len(seeds)  # embed + attack per trial
    ran = len(schemes) * len(seeds) + len(schemes) * len(attacks) * len(seeds)
    assert f"phase reuse: {ran} phases run / {in_matrix} in the matrix" in out
    assert f"embed: {len(schemes) * len(seeds)} phase(s)" in out
    assert f"attack: {len(schemes) * len(attacks) * len(seeds)} phase(s)" in out
    # the same run, read back afterwards (as for a matrix made over several sittings)
    made = tmp_path / "local-1" / "out"
    assert bench.main(["--of-run", str(made), "--workers", "2"]) == 0
    again = capsys.readouterr().out
    assert (
        f"{in_matrix} phases in its trials, {ran} unique, {ran} computed; complete: True" in again
    )
    assert f"embed: {len(schemes) * len(seeds)} phase(s)" in again and "on 2 workers" in again


def test_bad_flags_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        bench.main(["--measure", "speed"])
    assert exit_.value.code == 2
    assert "unknown 'speed'" in capsys.readouterr().err
    assert bench.main(["--recipe", "no-such-recipe", "--scale", "quick"]) == 2
    capsys.readouterr()
    assert bench.main(["--of-run", "no-such-folder"]) == 2
    assert "no recipe.json" in capsys.readouterr().err
