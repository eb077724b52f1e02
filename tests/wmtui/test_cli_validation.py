"""Refused before anything is written, from the command line: a label the dataset lacks, a
trigger larger than or outside its images, a fraction that selects no image. Each is exit
code 2, one line on stderr in the user's own numbers, and no --out folder; scenario and sweep
files are refused whole, naming the file and the phase."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import save_suspect_run
from wmtui.cli.main import app

runner = CliRunner()
TINY = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "64", "--epochs", "1"]
RUN = "{run}"  # the suspect run's folder, filled in by the test
PIRACY = ["attack", "--attack", "piracy", "--run", RUN, "--scheme", "pattern"]


@pytest.fixture(scope="module")
def suspect(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A run on 512 synthetic training images (10 classes, 28x28 grey)."""
    return save_suspect_run(tmp_path_factory.mktemp("cli-suspect") / "run", shared_data_dir)


def refused(args: list[str], out: Path) -> str:
    """Run the command; it must exit 2 with exactly one line on stderr and write nothing."""
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wmtui: error: ") and "Traceback" not in result.output
    assert not out.exists()
    return lines[0].removeprefix("wmtui: error: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["embed", *TINY, "--target-label", "12"],
            "--target-label 12: the dataset has 10 classes (0-9)",
        ),
        (
            ["embed", *TINY, "--scheme", "unrelated", "--target-label", "10"],
            "--target-label 10: the dataset has 10 classes (0-9)",
        ),
        (
            ["embed", "--from", RUN, "--target-label", "10"],
            "--target-label 10: the dataset has 10 classes (0-9)",
        ),
        (
            ["embed", *TINY, "--key-fraction", "0.0001"],
            "--key-fraction 0.0001 selects no key image of the 256 training images; "
            "the smallest that selects one is 0.002",
        ),
        (
            ["embed", *TINY, "--scheme", "newlabel", "--key-fraction", "1e-4"],
            "--key-fraction 1e-4 selects no key image of the 256 training images; "
            "the smallest that selects one is 0.002",
        ),
        (
            ["embed", *TINY, "--trigger-size", "40"],
            "trigger size 40 is larger than the 28 px images",
        ),
        (
            ["embed", *TINY, "--trigger", "square", "--position", "26,2"],
            "position 26,2: a 4x4 trigger must start within x 0..24, y 0..24",
        ),
        (
            ["attack", "--attack", "ft-basic", "--run", RUN, "--data-fraction", "0.000001"],
            "--data-fraction 0.000001 selects no image of the 512 training images; "
            "the smallest that selects one is 0.00098",
        ),
        (
            [*PIRACY, "--data-fraction", "0.01"],
            "piracy: the pirate's pattern key on its 5 images: --key-fraction 0.05 selects no "
            "key image of the 5 training images; the smallest that selects one is 0.11",
        ),
        (
            ["detect", "--method", "neural-cleanse", "--run", RUN, "--data-fraction", "1e-6"],
            "--data-fraction 1e-6 selects no image of the 512 training images; "
            "the smallest that selects one is 0.00098",
        ),
        (
            ["detect", "--method", "gan", "--run", RUN, "--data-fraction", "0.1"],
            "the scan needs at least 100 clean images; the attacker has 51 "
            "(--data-fraction 0.1 of 512): use --data-fraction >= 0.1954",
        ),
    ],
)
def test_a_job_the_data_cannot_take_is_refused_before_its_folder(
    tmp_path: Path, suspect: Path, args: list[str], message: str
) -> None:
    args = [str(suspect) if a == RUN else a for a in args]
    assert refused(args, tmp_path / "out") == message


TRAIN = '[train]\ndataset = "synthetic"\ntrain_size = 256\ntest_size = 64\nepochs = 1\n'
EMBED = '[[phases]]\nkind = "embed"\nscheme = "pattern"\n'
ATTACK = '[[phases]]\nkind = "attack"\nattack = "ft-basic"\n'


@pytest.mark.parametrize(
    ("phases", "message"),
    [
        (
            f"{EMBED}params = {{ target_label = 99 }}\n",
            "[[phases]] pattern: target_label 99: the dataset has 10 classes (0-9)",
        ),
        (
            f"{EMBED}{ATTACK}budget = {{ data_fraction = 0.000001 }}\n",
            "[[phases]] ft-basic: data_fraction 1e-06 selects no image of the 256 training "
            "images; the smallest that selects one is 0.002",
        ),
        (
            f'{EMBED}params = {{ trigger = "square", trigger_size = 30 }}\n',
            "[[phases]] pattern: trigger size 30 is larger than the 28 px images",
        ),
    ],
)
def test_a_scenario_file_is_refused_whole(tmp_path: Path, phases: str, message: str) -> None:
    scenario = tmp_path / "scenario.toml"
    scenario.write_text(TRAIN + phases)
    assert refused(["run", str(scenario)], tmp_path / "out") == f"{scenario} {message}"


def test_a_sweep_grid_is_refused_whole(tmp_path: Path) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text(
        f'{TRAIN}{EMBED}params = {{ target_label = "{{target}}" }}\n{ATTACK}'
        "[axes]\ntarget = [3, 10]\n"
    )
    assert refused(["sweep", str(grid)], tmp_path / "out") == (
        f"{grid}, trial target=10: [[phases]] pattern: target_label 10: the dataset has 10 "
        "classes (0-9)"
    )
