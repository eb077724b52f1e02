"""Users' own models: a ``module:factory`` architecture trained here, and state dicts trained
elsewhere imported as runs that attacks target; bad files are refused before anything is
written."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

from engine.models import Architecture, build_model
from engine.runs import RunDir, load_model
from wmtui.cli import app
from wmtui.cli import imports as cli_imports

cli_imports.register(app)
runner = CliRunner()
SIZES = ["--train-size", "256", "--test-size", "64"]
FACTORY = """
from torch import nn


def tiny(in_shape, num_classes):
    c, h, w = in_shape
    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, num_classes))
"""


class Opaque:
    """Anything that is not a tensor: loading it would need unpickling code."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


@pytest.fixture
def mymodels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A user's module of factories, importable as ``mymodels``."""
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "mymodels.py").write_text(FACTORY, encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "mymodels", raising=False)
    return "mymodels:tiny"


def lenet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model(Architecture("lenet5", (1, 28, 28), 10))
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def import_args(model_file: Path, model: str, out: Path, *extra: str) -> list[str]:
    head = ["import", str(model_file), "--model", model, "--dataset", "synthetic"]
    return [*head, "--out", str(out), *SIZES, *extra]


def test_train_with_a_user_factory(tmp_path: Path, mymodels: str) -> None:
    out = tmp_path / "run"
    args = ["train", "--dataset", "synthetic", "--model", mymodels, "--epochs", "1", *SIZES]
    result = runner.invoke(app, [*args, "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "model.json").read_text())["name"] == "mymodels:tiny"
    model, arch = load_model(out, "cpu")
    assert arch == Architecture("mymodels:tiny", (1, 28, 28), 10)
    assert isinstance(model, nn.Sequential)


def test_import_safetensors_then_attack(tmp_path: Path) -> None:
    weights = tmp_path / "lenet.safetensors"
    state = lenet_state()
    save_file(state, str(weights))
    run = tmp_path / "imported"
    result = runner.invoke(app, [*import_args(weights, "lenet5", run), "--json"])
    assert result.exit_code == 0, result.output
    row = json.loads(result.output.strip().splitlines()[-1])
    assert row == {
        "event": "imported",
        "run": str(run),
        "model": "lenet5",
        "dataset": "synthetic",
        "outputs": 10,
    }
    manifest = RunDir.open(run).manifest()
    assert manifest["command"] == "import"
    assert manifest["imported_from"] == str(weights)
    assert manifest["config"]["dataset"] == "synthetic"
    assert RunDir(run).summary()["status"] == "completed"
    model, _ = load_model(run, "cpu")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    again = runner.invoke(app, import_args(weights, "lenet5", run))
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert runner.invoke(app, import_args(weights, "lenet5", run, "--overwrite")).exit_code == 0

    attacked = tmp_path / "pruned"
    attack = ["attack", "--attack", "prune", "--run", str(run), "--ratio", "0.5"]
    attack += ["--data-fraction", "0.1", "--out", str(attacked), "--device", "cpu"]
    result = runner.invoke(app, attack)
    assert result.exit_code == 0, result.output
    assert (attacked / "model.safetensors").is_file()


def test_import_pt_and_a_new_label_model(tmp_path: Path, mymodels: str) -> None:
    weights = tmp_path / "lenet.pt"
    torch.save(lenet_state(), weights)
    result = runner.invoke(app, import_args(weights, "lenet5", tmp_path / "pt"))
    assert result.exit_code == 0, result.output
    assert "imported" in result.output
    assert load_model(tmp_path / "pt", "cpu")[1].num_classes == 10

    # a model trained with one extra (new) label keeps its 11 outputs
    wide = build_model(Architecture(mymodels, (1, 28, 28), 11))
    torch.save(wide.state_dict(), tmp_path / "wide.pth")
    result = runner.invoke(app, import_args(tmp_path / "wide.pth", mymodels, tmp_path / "wide"))
    assert result.exit_code == 0, result.output
    assert load_model(tmp_path / "wide", "cpu")[1] == Architecture(mymodels, (1, 28, 28), 11)


def refused(args: list[str], out: Path, hint: str) -> None:
    """Exit 2, one line with ``hint``, no traceback, and no run folder."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert hint in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert not out.exists()


def test_refuses_an_unimportable_factory(tmp_path: Path) -> None:
    weights = tmp_path / "lenet.safetensors"
    save_file(lenet_state(), str(weights))
    out = tmp_path / "run"
    refused(import_args(weights, "nosuchmodule:f", out), out, "cannot import nosuchmodule")


def test_refuses_weights_that_do_not_fit(tmp_path: Path) -> None:
    weights = tmp_path / "lenet.safetensors"
    save_file(lenet_state(), str(weights))
    out = tmp_path / "run"
    refused(import_args(weights, "digit-cnn", out), out, "does not fit digit-cnn")


@pytest.mark.parametrize("what", ["object", "module"])
def test_refuses_pickled_objects(tmp_path: Path, what: str) -> None:
    weights = tmp_path / "model.pt"
    if what == "object":
        torch.save({"weight": Opaque()}, weights)
    else:
        torch.save(build_model(Architecture("lenet5", (1, 28, 28), 10)), weights)
    out = tmp_path / "run"
    refused(import_args(weights, "lenet5", out), out, "save model.state_dict()")


def test_refuses_unknown_and_missing_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not a state dict")
    refused(import_args(onnx, "lenet5", out), out, ".safetensors, .pt, .pth")
    refused(import_args(tmp_path / "gone.pt", "lenet5", out), out, "model file not found")
