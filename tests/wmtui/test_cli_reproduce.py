"""``wmtui reproduce`` from the command line: the table, --check both ways, --list, resume,
and bad input as one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wmtui.cli.main import app

runner = CliRunner()

RECIPE = """
title = "tiny"
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
grid = { seed = [0, 1] }

[[arms.phases]]
name = "embed"
kind = "embed"
scheme = "pattern"
params = { trigger = "square", target_label = 3 }

[[cells]]
name = "accuracy"
table = "Table 0"
phase = "embed"
metric = "test_acc"
unit = "%"
paper = 90.0
expect.quick = { value = 50.0, tolerance = 50.0, reason = "any accuracy" }

[[cells]]
name = "key retention"
phase = "embed"
metric = "retention.key"
unit = "%"
expect.quick = { value = 50.0, tolerance = 50.0, reason = "any retention" }

[[cells]]
name = "embedding completed"
phase = "embed"
metric = "status"
measure = "equals"
equals = "completed"
unit = "%"
"""


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(RECIPE)
    return path


@pytest.fixture(scope="module")
def done(recipe_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "tiny"
    result = runner.invoke(app, ["reproduce", str(recipe_file), "--out", str(out), "--check"])
    assert result.exit_code == 0, result.output
    assert "| accuracy | Table 0 | 90.0% |" in result.output
    assert "check passed: 2 cells" in result.output
    # a rate of 0/1 outcomes carries its Wilson interval, with or without a paper figure
    assert "| embedding completed |  | - | 100.0% ± 0.0% (2 of 2; 95%: 34.2-100.0%) |" in (
        result.output
    )
    return out


def test_check_fails_naming_the_cell_when_an_expected_number_is_broken(
    done: Path, recipe_file: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "tiny.toml"  # the same trials (same keys), another expected number
    broken.write_text(
        RECIPE.replace(
            'value = 50.0, tolerance = 50.0, reason = "any retention"',
            'value = 5.0, tolerance = 1.0, reason = "broken on purpose"',
        )
    )
    result = runner.invoke(app, ["reproduce", str(broken), "--out", str(done), "--check"])
    assert result.exit_code == 1, result.output
    assert "check failed: key retention: mean " in result.output
    assert " outside 5 ± 1" in result.output
    assert "check failed: 1 of 2 cell(s)" in result.output
    assert "trial 1/2: marked seed=0: completed in an earlier run, kept" in result.output


def test_json_gives_the_comparison_as_one_object(done: Path, recipe_file: Path) -> None:
    result = runner.invoke(
        app, ["reproduce", str(recipe_file), "--out", str(done), "--no-run", "--json"]
    )
    assert result.exit_code == 0, result.output
    last = json.loads(result.output.strip().splitlines()[-1])
    assert last["event"] == "recipe" and last["passed"] is True
    assert [c["name"] for c in last["cells"]] == [
        "accuracy",
        "key retention",
        "embedding completed",
    ]
    assert all(c["n"] == 2 for c in last["cells"])


def test_suggest_prints_regression_records_of_every_trial(done: Path, recipe_file: Path) -> None:
    result = runner.invoke(
        app, ["reproduce", str(recipe_file), "--out", str(done), "--no-run", "--suggest"]
    )
    assert result.exit_code == 0, result.output
    assert "\n[regression.quick]\n# accuracy: the paper: " in result.output
    assert '\n"accuracy" = { tolerance = 1, values = { "seed=0" = ' in result.output


def test_list_shows_every_recipe_and_its_scales() -> None:
    result = runner.invoke(app, ["reproduce", "--list"])
    assert result.exit_code == 0, result.output
    for name in ("refit", "gan", "newlabel", "piracy", "datafree"):
        assert f"| {name} | quick |" in result.output and f"| {name} | paper |" in result.output


PENDING_RECIPE = """
title = "A paper whose issue has not landed"
paper = "Someone et al."
source = "Table 1"
status = "pending"
pending = "waits for its issue"

[scales.quick]
minutes = 1
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["refti"], "unknown recipe 'refti' (did you mean 'refit'?)"),
        (["gan", "--scale", "huge"], "--scale must be one of quick, paper"),
        (["PENDING"], "recipe pending is pending: waits for its issue"),
        ([], "name a recipe"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    if args == ["PENDING"]:
        (tmp_path / "pending.toml").write_text(PENDING_RECIPE)
        args = [str(tmp_path / "pending.toml")]
    result = runner.invoke(app, ["reproduce", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('paper = "Nobody et al."\n', "", "missing field 'paper'"),
        (', reason = "any accuracy" }', " }", "needs reason"),
        ('tolerance = 50.0, reason = "any accuracy"', 'reason = "any accuracy"', "needs tolerance"),
        ('metric = "retention.key"', 'metric = "retention.key"\nwhere = { taget = 1 }', "taget"),
    ],
)
def test_a_bad_recipe_file_is_one_line_and_exit_2(
    old: str, new: str, message: str, tmp_path: Path
) -> None:
    path = tmp_path / "bad.toml"
    assert old in RECIPE
    path.write_text(RECIPE.replace(old, new, 1))
    result = runner.invoke(app, ["reproduce", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and "bad.toml" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
