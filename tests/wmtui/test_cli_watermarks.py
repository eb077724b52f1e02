"""`wmtui embed` / `wmtui verify`: exit codes 0/1/2, JSON keys, key files, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from engine.data import load_dataset
from engine.runs import load_tensors
from engine.watermarks import KeyContext, get_scheme, parse_scheme_params, save_key
from tests.conftest import write_mnist_style
from wmtui.cli import app
from wmtui.cli import watermarks as cli_watermarks

cli_watermarks.register(app)
cli_watermarks.register(app)  # idempotent: cli.py will call it too

runner = CliRunner()
TINY = [
    "--dataset",
    "synthetic",
    "--train-size",
    "2000",
    "--test-size",
    "300",
    "--epochs",
    "4",
    "--optimizer",
    "adam",
    "--lr",
    "0.003",
    "--eval-every",
    "40",
    "--device",
    "cpu",
]


def invoke(*args: str):
    return runner.invoke(app, list(args))


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = invoke(
        "embed",
        "--scheme",
        "pattern",
        *TINY,
        "--epochs",  # the 15x5 px word against decoy words takes a longer tiny budget
        "8",
        "--data-dir",
        str(shared_data_dir),
        "--out",
        str(out),
        "--json",
    )
    assert result.exit_code == 0, result.output
    events = json_lines(result.stdout)
    phase = next(e for e in events if e["event"] == "phase")
    assert phase["info"]["scheme"] == "pattern"
    assert any(e["event"] == "metrics" and "key" in e["retention"] for e in events)
    return out


def test_embed_writes_a_secret_key_beside_the_model(embedded: Path) -> None:
    for name in ("key.json", "key.safetensors"):
        assert oct(os.stat(embedded / "key" / name).st_mode)[-3:] == "600"
    model = load_tensors(embedded / "model.safetensors", "model")
    assert all(name.startswith(("features.", "classifier.")) for name in model)
    manifest = json.loads((embedded / "manifest.json").read_text())
    assert manifest["scheme"] == "pattern" and manifest["scheme_params"]["target_label"] == 7


def test_verify_own_key_exits_0_with_json(embedded: Path, shared_data_dir: Path) -> None:
    result = invoke("verify", "--run", str(embedded), "--json", "--device", "cpu")
    assert result.exit_code == 0, result.output
    row = json_lines(result.stdout)[0]
    assert {"retention", "p_value", "verified", "test_acc", "n_key"} <= set(row)
    assert row["verified"] and row["p_value"] < 1e-6 and row["retention"] > 0.9
    human = invoke("verify", "--run", str(embedded), "--device", "cpu")
    assert human.exit_code == 0 and human.stdout.startswith("VERIFIED")


def test_verify_wrong_key_exits_1(embedded: Path, tmp_path: Path, shared_data_dir: Path) -> None:
    data = load_dataset("synthetic", shared_data_dir, train_size=2000, test_size=300).data
    params = parse_scheme_params("pattern", {"trigger": "noise", "target_label": 4})
    other = get_scheme("pattern").keygen(params, KeyContext(data, "lenet5", 5))
    save_key(tmp_path / "other", other)
    result = invoke("verify", "--run", str(embedded), "--key", str(tmp_path / "other"), "--json")
    assert result.exit_code == 1, result.output
    assert json_lines(result.stdout)[0]["verified"] is False


def test_verify_mismatched_or_missing_key_exits_2(embedded: Path, tmp_path: Path) -> None:
    write_mnist_style(tmp_path / "mnist", n_train=64, n_test=32)
    data = load_dataset("mnist", tmp_path, train_size=64, test_size=32).data
    key = get_scheme("pattern").keygen(
        parse_scheme_params("pattern", {}), KeyContext(data, "lenet5", 0)
    )
    save_key(tmp_path / "mnist-key", key)
    result = invoke("verify", "--run", str(embedded), "--key", str(tmp_path / "mnist-key"))
    assert result.exit_code == 2 and "key does not match the run" in result.stderr
    assert "Traceback" not in result.output
    missing = invoke("verify", "--run", str(tmp_path / "nope"))
    assert missing.exit_code == 2 and "run directory not found" in missing.stderr
    nokey = invoke("verify", "--run", str(embedded), "--key", str(tmp_path / "nokey"))
    assert nokey.exit_code == 2 and "key directory not found" in nokey.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--scheme", "patern"], "did you mean 'pattern'"),
        (["--target-label", "10"], "target-label 10: the dataset has 10 classes"),
        (["--key-fraction", "1.5"], "key-fraction: must be < 1.0"),
        (["--key-fraction", "0"], "key-fraction: must be > 0.0"),
        (["--count", "5"], "--count does not apply to scheme 'pattern'"),
        (["--trigger", "image:/no/such/file.png"], "trigger image not found"),
        (["--trigger", "sqare"], "did you mean 'square'"),
        (["--scheme", "newlabel", "--beta", "2"], "beta: must be <= 1.0"),
    ],
)
def test_bad_embed_input_is_one_line_exit_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    result = invoke("embed", *TINY, "--epochs", "1", *args, "--out", str(tmp_path / "r"))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("wmtui: error:") and fragment in lines[-1]
    assert "Traceback" not in result.output


def test_trigger_file_that_is_not_an_image_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "trigger.png"
    bad.write_text("not really a png")
    result = invoke("embed", *TINY, "--trigger", f"image:{bad}", "--out", str(tmp_path / "r"))
    assert result.exit_code == 2 and "not a readable image" in result.stderr


def test_embed_reads_train_and_scheme_tables(tmp_path: Path, shared_data_dir: Path) -> None:
    logo = tmp_path / "logo.png"
    Image.new("RGBA", (12, 12), (255, 255, 255, 255)).save(logo)
    config = tmp_path / "c.toml"
    config.write_text(
        f'[train]\ndataset = "synthetic"\nepochs = 1\ntrain_size = 256\ntest_size = 64\n'
        f'data_dir = "{shared_data_dir}"\ndevice = "cpu"\n\n'
        f'[scheme]\nname = "pattern"\ntrigger = "image:{logo}"\ntarget_label = 2\n'
    )
    result = invoke(
        "embed",
        "--config",
        str(config),
        "--trigger-size",
        "5",
        "--out",
        str(tmp_path / "r"),
        "--json",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    params = manifest["scheme_params"]
    assert params["target_label"] == 2 and params["trigger_size"] == 5
    logs = [e["message"] for e in json_lines(result.stdout) if e["event"] == "log"]
    assert any("converted (mode RGBA -> L, size 12x12 -> 5x5)" in m for m in logs)


def test_embed_from_a_run_of_another_model_is_refused_before_out_exists(tmp_path) -> None:
    from engine.models import Architecture, build_model
    from engine.runs import RunDir

    base = RunDir.create(tmp_path / "base", {"config": {"dataset": "synthetic"}})
    arch = Architecture("lenet5", (1, 28, 28), 10)
    base.save_model(build_model(arch), arch)
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app,
        [
            "embed",
            "--from",
            str(base.path),
            "--model",
            "digit-cnn",
            "--out",
            str(out),
            "--epochs",
            "1",
            "--dataset",
            "synthetic",
        ],
    )
    assert result.exit_code == 2 and "its model is lenet5, not digit-cnn" in result.output
    assert not out.exists()
