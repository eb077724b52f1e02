import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.runs import RunDir
from tests.conftest import write_mnist_style
from wmtui.cli import app

runner = CliRunner()
TINY = [
    "--dataset",
    "synthetic",
    "--train-size",
    "256",
    "--test-size",
    "64",
    "--batch-size",
    "64",
    "--eval-every",
    "2",
]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_train_json_stream_and_run_directory(tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = invoke("train", *TINY, "--epochs", "1", "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    events = json_lines(result.stdout)
    assert events[-1]["event"] == "done" and events[-1]["status"] == "completed"
    assert {"log", "phase", "metrics", "checkpoint"} <= {e["event"] for e in events}
    for name in (
        "manifest.json",
        "model.safetensors",
        "model.json",
        "metrics.jsonl",
        "events.jsonl",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test_acc"] == events[-1]["summary"]["test_acc"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["epochs"] == 1 and "torch" in manifest


def test_human_output_goes_to_stderr_only(tmp_path: Path) -> None:
    result = invoke("train", *TINY, "--epochs", "1", "--out", str(tmp_path / "r"))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert "test acc" in result.stderr and "completed" in result.stderr


def test_resume_extends_a_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke("train", *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    result = invoke("resume", str(out), "--epochs", "2", "--json")
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout)[-1]["summary"]["steps"] == 8
    assert RunDir.open(out).manifest()["config"]["epochs"] == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--dataset", "fashon-mnist"], "did you mean 'fashion-mnist'"),
        (["--model", "lenet"], "did you mean 'lenet5'"),
        (["--device", "gpu"], "unknown device"),
        (["--lr", "-0.1"], "lr: must be > 0"),
        (["--lr", "0"], "lr: must be > 0"),
        (["--lr", "nan"], "finite"),
        (["--epochs", "0"], "epochs: must be >= 1"),
        (["--epochs", "-3"], "epochs: must be >= 1"),
        (["--dataset", "cifar10"], "wmtui data fetch cifar10"),
    ],
)
def test_bad_train_input_is_one_line_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = invoke("train", *args, "--out", str(tmp_path / "r"))
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("wmtui: error:") and fragment in lines[-1]
    assert "Traceback" not in result.output


def test_unwritable_out_is_exit_2(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = invoke("train", *TINY, "--out", str(blocker / "run"))
    assert result.exit_code == 2 and "cannot write" in result.stderr


def test_existing_run_is_not_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke("train", *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    before = (out / "model.safetensors").read_bytes()
    result = invoke("train", *TINY, "--out", str(out))
    assert result.exit_code == 2 and "already holds a run" in result.stderr
    assert (out / "model.safetensors").read_bytes() == before


@pytest.mark.parametrize("damage", ["missing", "manifest", "checkpoint"])
def test_resume_of_broken_runs_is_exit_2(tmp_path: Path, damage: str) -> None:
    out = tmp_path / "run"
    if damage != "missing":
        assert invoke("train", *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
        target = out / ("manifest.json" if damage == "manifest" else "checkpoint.safetensors")
        target.write_bytes(b"\x00garbage")
    result = invoke("resume", str(out), "--epochs", "2")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1].startswith("wmtui: error:")


def test_nan_loss_exits_2_and_keeps_last_good_checkpoint(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    out = tmp_path / "run"
    assert invoke("train", *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    good_model = (out / "model.safetensors").read_bytes()
    # Poison the checkpoint so the forward pass overflows from the first resumed step.
    tensors = load_file(str(out / "checkpoint.safetensors"))
    tensors["model/classifier.4.weight"].fill_(3e38)
    save_file(tensors, str(out / "checkpoint.safetensors"))
    result = invoke("resume", str(out), "--epochs", "2", "--json")
    assert result.exit_code == 2, result.output
    errors = [e for e in json_lines(result.stdout) if e["event"] == "error"]
    assert (
        len(errors) == 1
        and "non-finite at step 5" in errors[0]["message"]
        and errors[0]["step"] == 5
    )
    assert result.stderr.strip().splitlines()[-1].startswith("wmtui: error: loss became non-finite")
    assert (out / "model.safetensors").read_bytes() == good_model
    assert json.loads((out / "summary.json").read_text())["status"] == "diverged"


def test_data_list_and_fetch_offline(tmp_path: Path) -> None:
    write_mnist_style(tmp_path / "mnist")
    result = invoke("data", "list", "--data-dir", str(tmp_path), "--json")
    assert result.exit_code == 0
    rows = {row["name"]: row["present"] for row in json_lines(result.stdout)}
    assert rows["mnist"] is True and rows["synthetic"] is True and rows["cifar10"] is False
    fetched = invoke("data", "fetch", "mnist", "--data-dir", str(tmp_path), "--json")
    assert fetched.exit_code == 0 and json_lines(fetched.stdout)[0]["train"] == 64
    missing = invoke("data", "fetch", "nmist", "--data-dir", str(tmp_path))
    assert missing.exit_code == 2 and "did you mean 'mnist'" in missing.stderr


def test_train_reads_toml_config(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[train]\ndataset = "synthetic"\nepochs = 1\ntrain_size = 128\ntest_size = 32\n'
    )
    result = invoke(
        "train",
        "--config",
        str(config),
        "--batch-size",
        "64",
        "--out",
        str(tmp_path / "r"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert json_lines(result.stdout)[-1]["summary"]["steps"] == 2
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    result = invoke("train", "--config", str(bad), "--out", str(tmp_path / "r2"))
    assert result.exit_code == 2 and "not valid TOML" in result.stderr


def test_model_file_is_weights_only(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert invoke("train", *TINY, "--epochs", "1", "--out", str(out)).exit_code == 0
    from safetensors.torch import load_file

    tensors = load_file(str(out / "model.safetensors"))
    assert all(isinstance(t, torch.Tensor) for t in tensors.values())
    assert oct(os.stat(out / "model.safetensors").st_mode)[-3:] in {"600", "644"}
