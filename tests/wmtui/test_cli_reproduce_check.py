"""``wmtui reproduce --check`` as a regression check that can fail: records written with
``--suggest-into``, an unchanged rerun passing, a changed record or a removed trial failing
exactly the cells concerned, each named with its trial."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.reports.build import build
from wmtui.cli.main import app

runner = CliRunner()

#: four tiny trials (2 seeds x 2 targets, one embedding each); cells per target and overall
RECIPE = """
title = "tiny matrix"
paper = "Nobody et al."
source = "Table 0"

[train]
dataset = "synthetic"
train_size = 256
test_size = 128
epochs = 1
optimizer = "adam"
lr = 0.003
device = "cpu"

[scales.quick]
minutes = 1

[[arms]]
name = "marked"
grid = { seed = [0, 1], target = [3, 5] }

[[arms.phases]]
name = "embed"
kind = "embed"
scheme = "pattern"
params = { trigger = "square", target_label = "{target}" }

[[cells]]
name = "accuracy, target 3"
phase = "embed"
metric = "test_acc"
where = { target = 3 }
unit = "%"
paper = 90.0

[[cells]]
name = "accuracy, target 5"
phase = "embed"
metric = "test_acc"
where = { target = 5 }
unit = "%"

[[cells]]
name = "key retention"
phase = "embed"
metric = "retention.key"
unit = "%"
expect.quick = { value = 50.0, tolerance = 50.0, reason = "any retention" }

[[cells]]
name = "seconds to embed"
phase = "embed"
metric = "seconds"
record = false
"""


def reproduce(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, ["reproduce", *map(str, args)])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The recipe run once, and the copy of its file holding that run's records."""
    folder = tmp_path_factory.mktemp("check")
    (folder / "tiny.toml").write_text(RECIPE)
    out, copy = folder / "out", folder / "recorded" / "tiny.toml"  # same name, same recipe
    code, output = reproduce(
        folder / "tiny.toml", "--out", out, "--suggest-into", copy, "--threads", "1"
    )
    assert code == 0, output
    assert f"wrote {copy}: 3 cell(s) with a regression record" in output
    return out, copy


def test_suggest_into_records_every_trial_and_keeps_the_file(recorded: tuple[Path, Path]) -> None:
    out, copy = recorded
    text = copy.read_text()
    original, _, table = text.partition("\n[regression.quick]\n")
    assert original == RECIPE  # the file as it was, a blank line, the table after it
    assert sum(line.startswith('"') for line in table.splitlines()) == 3
    # a wall time is measured, never recorded: a rerun cannot repeat it
    assert "# seconds to embed: the paper: " in table and "not repeatable" in table
    assert '"seconds to embed" =' not in table
    result = json.loads((out / "recipe.json").read_text())
    for cell in result["cells"][:3]:
        assert (
            cell["planned"]
            == len(cell["trial_values"])
            == (4 if "retention" in cell["name"] else 2)
        )
        for label, value in cell["trial_values"].items():
            assert f'"{label}" = {value!r}' in text  # full precision, keyed by grid point


def test_an_unchanged_rerun_passes_and_an_old_band_is_no_longer_needed(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    _, copy = recorded
    rerun = tmp_path / "rerun"  # a fresh folder: every trial trained again, same seeds
    code, output = reproduce(copy, "--out", rerun, "--check", "--threads", "1")
    assert code == 0, output
    assert "check passed: 3 cells (3 regression, 0 band)" in output
    assert "| accuracy, target 3 |  | 90.0% |" in output
    assert "(identical) |" in output and "within ±" not in output  # same bits, not just close
    assert "0 done earlier, 4 to run" in output  # trained again, not read from a cache


def test_one_changed_value_fails_naming_the_cell_and_the_trial(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    out, copy = recorded
    result = json.loads((out / "recipe.json").read_text())
    values = result["cells"][1]["trial_values"]
    measured = values["seed=1 target=5"]
    line = next(
        ln
        for ln in copy.read_text().splitlines()
        if repr(measured) in ln and "seed=1 target=5" in ln
    )
    changed = line.replace(
        f'"seed=1 target=5" = {measured!r}', f'"seed=1 target=5" = {measured + 2.0!r}'
    )
    assert changed != line
    edited = tmp_path / "edited.toml"
    edited.write_text(copy.read_text().replace(line, changed))
    code, output = reproduce(edited, "--out", out, "--no-run", "--check")
    assert code == 1, output
    failed = [ln for ln in output.splitlines() if ln.startswith("check failed: ")]
    assert failed == [
        f"check failed: accuracy, target 5: seed=1 target=5: {measured:.6g}, "
        f"recorded {measured + 2.0:.6g} (± 1)",
        "check failed: 1 of 3 cell(s)",
    ]
    # recording again replaces the file's table: the measured value is back, nothing else moves
    again = tmp_path / "again" / "tiny.toml"
    code, output = reproduce(edited, "--out", out, "--no-run", "--suggest-into", again)
    assert code == 0, output
    assert again.read_text() == copy.read_text()


def test_a_removed_trial_fails_the_cells_it_feeds_and_only_those(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    out, copy = recorded
    partial = tmp_path / "out"
    shutil.copytree(out, partial, symlinks=True)
    result = json.loads((out / "recipe.json").read_text())
    gone = next(t for t in result["trials"] if t["params"] == {"seed": 0, "target": 3})
    shutil.rmtree(partial / gone["run"])
    code, output = reproduce(copy, "--out", partial, "--no-run", "--check")
    assert code == 1, output
    failed = [ln for ln in output.splitlines() if ln.startswith("check failed: ")]
    assert failed == [
        "check failed: accuracy, target 3: 1 of 2 trials have a value; seed=0 target=3: no value",
        "check failed: key retention: 3 of 4 trials have a value; seed=0 target=3: no value",
        # a wall time has no record, yet a missing trial fails it as any cell
        "check failed: seconds to embed: 3 of 4 trials have a value; seed=0 target=3: no value",
        "check failed: 3 of 4 cell(s)",
    ]
    assert f"1 trial(s) did not complete: {gone['id']}" in output


def test_suggest_into_an_existing_file_is_one_line_and_exit_2(
    recorded: tuple[Path, Path],
) -> None:
    out, copy = recorded
    before = copy.read_text()
    code, output = reproduce(copy, "--out", out, "--no-run", "--suggest-into", copy)
    assert (
        code == 2
        and output.strip()
        == f"wmtui: error: --suggest-into: {copy} exists; name a new file (the copy)"
    )
    assert copy.read_text() == before


def test_the_report_shows_both_verdicts(recorded: tuple[Path, Path], tmp_path: Path) -> None:
    out, copy = recorded
    code, output = reproduce(copy, "--out", out, "--no-run")  # recipe.json from the records
    assert code == 0, output
    page = build(out).page
    result = json.loads((out / "recipe.json").read_text())
    verdict = result["cells"][0]["paper_check"]["verdict"]
    assert verdict in page and "identical" in page and "95% " in page
    assert "band (no regression record)" not in page  # every cell has its record now


def test_suggest_into_under_a_file_is_one_line_and_exit_2(
    recorded: tuple[Path, Path], tmp_path: Path
) -> None:
    out, copy = recorded
    (tmp_path / "plain").write_text("x")
    target = tmp_path / "plain" / "tiny.toml"
    code, output = reproduce(copy, "--out", out, "--no-run", "--suggest-into", target)
    assert code == 2, output
    assert (
        output.strip()
        == f"wmtui: error: --suggest-into: {tmp_path / 'plain'} is a file, not a folder"
    )
