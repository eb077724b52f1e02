"""``wmtui detect`` end to end on a tiny run: JSON keys, the run it writes, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.config import TrainConfig
from engine.models import Architecture, build_model
from engine.runs import RunDir
from tests.conftest import save_suspect_run
from wmtui.cli import app
from wmtui.cli import detect as cli_detect

cli_detect.register(app)
cli_detect.register(app)  # a second registration is a no-op
runner = CliRunner()
FAST = ["--scan-steps", "6", "--images", "200", "--val-images", "50", "--batch", "8"]


@pytest.fixture
def suspect_run(tmp_path: Path, shared_data_dir: Path) -> Path:
    return save_suspect_run(tmp_path / "suspect", shared_data_dir)


def last_json(output: str) -> dict:
    rows = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return rows[-1]


def test_detect_json_reports_sizes_flag_and_index(suspect_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "det"
    result = runner.invoke(
        app,
        [
            "detect",
            "--method",
            "neural-cleanse",
            "--run",
            str(suspect_run),
            "--out",
            str(out),
            "--json",
            "--device",
            "cpu",
            "--data-fraction",
            "0.5",
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    row = last_json(result.stdout)
    assert row["event"] == "detection"
    assert len(row["perturbation_sizes"]) == 10
    assert "flagged_class" in row and isinstance(row["anomaly_index"], float)
    assert "test_acc" not in row  # no removal asked
    assert row["steps"] == row["cap"] == 6 and row["stopped_because"].startswith("cap reached")
    assert (out / "summary.json").is_file() and (out / "events.jsonl").is_file()
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert sum(e["event"] == "class_scan" and e["done"] for e in events) == 10


def test_detect_remove_reports_before_and_after(suspect_run: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        [
            "detect",
            "--method",
            "gan",
            "--run",
            str(suspect_run),
            "--out",
            str(tmp_path / "r"),
            "--json",
            "--device",
            "cpu",
            "--remove",
            "--data-fraction",
            "0.2",
            "--epochs",
            "1",
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    row = last_json(result.stdout)
    assert {"test_acc", "test_acc_before", "retention", "retention_before"} <= set(row)
    assert len(row["perturbation_sizes"]) == 10


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--method", "nope"], "nope"),
        (["--method", "neural-cleanse", "--mode", "image"], "--mode"),
        (["--method", "gan", "--remove", "--data-fraction", "0"], "data-fraction"),
        (["--method", "gan", "--threshold", "0"], "threshold: must be > 0"),
        (["--method", "gan", "--threshold", "-3"], "threshold: must be > 0"),
        (["--method", "gan", "--gap", "0.5"], "gap: must be >= 1"),
        (["--method", "gan", "--remove", "maybe"], "remove: expected true or false"),
    ],
)
def test_bad_input_is_one_line_exit_2(suspect_run: Path, tmp_path: Path, args, needle) -> None:
    out = tmp_path / "bad"
    result = runner.invoke(app, ["detect", "--run", str(suspect_run), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_too_few_clean_images_says_which_fraction_would_do(
    suspect_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "few"
    args = ["detect", "--method", "gan", "--run", str(suspect_run), "--out", str(out)]
    result = runner.invoke(app, [*args, "--data-fraction", "0.1", *FAST])
    assert result.exit_code == 2, result.output
    # 10% of 512 training images is 51; 100 are needed, so 100/512 = 0.1954 of them
    assert "at least 100 clean images" in result.output and ">= 0.1954" in result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # refused before a run folder was made: the retry needs no --overwrite
    ok = runner.invoke(app, [*args, "--data-fraction", "0.1954", *FAST])
    assert ok.exit_code == 0, ok.output


def test_a_one_class_model_is_refused_before_anything_is_written(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    config = TrainConfig(dataset="synthetic", train_size=512, data_dir=str(shared_data_dir))
    run = RunDir.create(tmp_path / "one", {"command": "train", "config": config.to_dict()})
    arch = Architecture("lenet5", (1, 28, 28), 1)
    run.save_model(build_model(arch), arch)
    out = tmp_path / "det"
    result = runner.invoke(
        app, ["detect", "--method", "neural-cleanse", "--run", str(run.path), "--out", str(out)]
    )
    assert result.exit_code == 2, result.output
    assert "1 output class" in result.output and "at least 2" in result.output
    assert "Traceback" not in result.output and not out.exists()


def test_one_detect_run_loads_the_dataset_once(
    suspect_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget check counts the clean images on the data the scan then uses."""
    from engine.jobs import referee

    calls = []
    real = referee.load_dataset

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(referee, "load_dataset", counting)
    args = ["detect", "--method", "gan", "--run", str(suspect_run), "--out", str(tmp_path / "d")]
    result = runner.invoke(app, [*args, "--data-fraction", "0.5", "--device", "cpu", *FAST])
    assert result.exit_code == 0, result.output
    assert calls == ["synthetic"]


def test_a_missing_dataset_is_refused_before_any_folder(tmp_path: Path) -> None:
    """Every refereed command checks the suspect's dataset before making --out."""
    config = TrainConfig(dataset="mnist", data_dir=str(tmp_path / "empty"))
    run = RunDir.create(tmp_path / "suspect", {"command": "train", "config": config.to_dict()})
    arch = Architecture("lenet5", (1, 28, 28), 10)
    run.save_model(build_model(arch), arch)
    for command, flag in (("detect", "--method"), ("attack", "--attack")):
        plugin = "gan" if command == "detect" else "ft-basic"
        out = tmp_path / command
        args = [command, flag, plugin, "--run", str(run.path), "--out", str(out)]
        result = runner.invoke(app, [*args, "--data-fraction", "0.5"])
        assert result.exit_code == 2 and "mnist" in result.output, result.output
        assert not out.exists()


@pytest.mark.parametrize(
    ("given", "removes"),
    [
        ([], False),
        (["--remove"], True),
        (["--remove", "true"], True),
        (["--remove=yes"], True),
        (["--remove", "false"], False),
        (["--remove=false"], False),
    ],
)
def test_remove_is_one_flag_alone_or_with_a_value(
    suspect_run: Path, tmp_path: Path, given: list[str], removes: bool
) -> None:
    """The detector's own ``--remove BOOL`` is the only one: left out it is false (detect
    only), alone it is true, and true/false values are taken (no 'unexpected argument')."""
    out = tmp_path / "r"
    args = ["detect", "--method", "neural-cleanse", "--run", str(suspect_run), "--out", str(out)]
    tiny = ["--scan-steps", "2", "--images", "100", "--val-images", "50", "--batch", "4"]
    budget = ["--data-fraction", "0.5", "--steps", "1"]
    result = runner.invoke(app, [*args, *given, "--json", "--device", "cpu", *budget, *tiny])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detect"]["params"]["remove"] is removes
    assert ("test_acc" in last_json(result.stdout)) is removes


def test_help_says_what_remove_does_and_its_default() -> None:
    text = runner.invoke(app, ["detect", "--help"], terminal_width=100).output
    assert "--remove [BOOL]" in text and "detect only" in text
    assert "(default: true)" not in text  # the detectors' scenario default is not this one's
