"""White-box verification and the ``uchida`` scheme: bits read from a hand-made layer, a key
that names its layer by role (so a wrapped, renamed, re-saved model still verifies), one real
embedding against its clean twin, and the refusals of ``wmtui verify`` and ``wmtui embed``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from typer.testing import CliRunner

from engine.data import load_dataset
from engine.errors import ConfigError
from engine.jobs import JobSpec, run
from engine.models import Architecture, build_model
from engine.runs import RunDir
from engine.watermarks import get_scheme, load_key
from engine.watermarks.white_box import LayerRole, bit_verdict, find_layer, mean_weights, read_bits
from wmtui.cli import app

runner = CliRunner()
TRAIN = dict(
    dataset="synthetic",
    train_size=1024,
    test_size=256,
    epochs=8,
    optimizer="adam",
    lr=0.01,
    device="cpu",
)


def test_bits_and_ber_from_a_hand_made_layer() -> None:
    conv = nn.Conv2d(1, 2, kernel_size=(1, 3), bias=False)
    with torch.no_grad():  # filters [1, 2, -3] and [3, 0, 1]: their mean is [2, 1, -1]
        conv.weight.copy_(torch.tensor([[[[1.0, 2.0, -3.0]]], [[[3.0, 0.0, 1.0]]]]))
    w = mean_weights(conv)
    assert w.tolist() == [2.0, 1.0, -1.0]
    projection = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, -2.0, 0.0], [0.0, 1.0, 2.0], [1.0, 1.0, 1.0]]
    )  # X w = [2, -1, 0, -1, 2]: a zero reads as 0
    bits = read_bits(projection, w)
    assert bits.tolist() == [1, 0, 0, 0, 1]
    signature = torch.tensor([1, 0, 1, 1, 1], dtype=torch.uint8)
    verdict = bit_verdict(bits, signature, alpha=0.05)
    assert verdict.ber == pytest.approx(2 / 5)
    assert (verdict.n_key, verdict.matches) == (5, 3)
    # at most 2 errors in 5 fair coins: (1 + 5 + 10) / 32
    assert verdict.p_value == pytest.approx(16 / 32)
    assert not verdict.verified
    perfect = bit_verdict(signature.long(), signature, alpha=0.05)
    assert perfect.ber == 0 and perfect.p_value == pytest.approx(1 / 32) and perfect.verified


def test_layers_are_found_by_role_whatever_their_names() -> None:
    model = build_model(Architecture("lenet5", (1, 28, 28), 10))
    wrapped = nn.Sequential()
    wrapped.add_module("renamed", model)
    second = find_layer(wrapped, LayerRole("conv", 2))
    assert second is model.features[3]  # type: ignore[index]
    assert find_layer(wrapped, LayerRole("linear", 3)) is model.classifier[4]  # type: ignore[index]
    with pytest.raises(ConfigError, match="has 2 conv layers"):
        find_layer(model, LayerRole("conv", 3))
    with pytest.raises(ConfigError, match="counted from 1"):
        LayerRole("conv", 0)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> tuple[Path, Path]:
    """A LeNet-5 embedded with ``uchida`` and its clean twin (same seed, same data)."""
    folder = tmp_path_factory.mktemp("uchida")
    data = dict(TRAIN, data_dir=str(shared_data_dir))
    marked = folder / "marked"
    assert run(JobSpec.embed("uchida", out=marked, **data)).status == "completed"
    clean = folder / "clean"
    assert run(JobSpec.train(out=clean, **data)).status == "completed"
    return marked, clean


def test_embedding_reads_back_at_a_small_cost_and_a_clean_twin_reads_coins(
    runs: tuple[Path, Path], shared_data_dir: Path
) -> None:
    marked, clean = runs
    summary = RunDir.open(marked).summary()
    assert summary["verify"]["ber"] == 0 and summary["verify"]["verified"]
    clean_acc = RunDir.open(clean).summary()["test_acc"]
    assert summary["test_acc"] > clean_acc - 0.05
    key = load_key(marked / "key")
    assert key.meta["layer"] == {"kind": "conv", "index": 2}
    assert (marked / "key" / "key.safetensors").stat().st_mode & 0o777 == 0o600
    weights = load_file(str(marked / "model.safetensors"))
    assert not any("projection" in k or "signature" in k for k in weights)
    data = load_dataset("synthetic", shared_data_dir, train_size=1024, test_size=256).data
    model, _ = RunDir.open(clean).load_model("cpu")
    verdict = get_scheme("uchida").verify(model, key, data, 1e-3)
    assert 0.3 < verdict.ber < 0.7 and verdict.p_value > 1e-3 and not verdict.verified  # type: ignore[operator]


def test_a_renamed_and_resaved_model_still_verifies(
    runs: tuple[Path, Path], tmp_path: Path, shared_data_dir: Path
) -> None:
    marked, _ = runs
    model, arch = RunDir.open(marked).load_model("cpu")

    class Wrapper(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.backbone = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.backbone(x)

    path = tmp_path / "stolen.safetensors"
    save_file(Wrapper(model).state_dict(), str(path))
    stolen = Wrapper(build_model(arch))
    stolen.load_state_dict(load_file(str(path)))
    assert all(name.startswith("backbone.") for name in stolen.state_dict())
    data = load_dataset("synthetic", shared_data_dir, train_size=1024, test_size=256).data
    verdict = get_scheme("uchida").verify(stolen, load_key(marked / "key"), data, 1e-3)
    assert verdict.ber == 0 and verdict.verified


def test_verify_cli_reads_the_weights_only_when_asked(
    runs: tuple[Path, Path], pattern_run: Path
) -> None:
    marked, clean = runs
    result = runner.invoke(app, ["verify", "--run", str(marked), "--white-box", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["ber"], shown["bits"], shown["verified"]) == (0, 100, True)
    assert shown["p_value"] == pytest.approx(2.0**-100)
    result = runner.invoke(
        app, ["verify", "--run", str(clean), "--key", str(marked / "key"), "--white-box"]
    )
    assert result.exit_code == 1, result.output
    assert "NOT VERIFIED" in result.output and "bit error rate" in result.output
    result = runner.invoke(app, ["verify", "--run", str(marked)])
    assert result.exit_code == 2 and "--white-box" in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["verify", "--run", str(pattern_run), "--white-box"])
    assert result.exit_code == 2 and "drop --white-box" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bits", "0"], "bits"),
        (["--strength", "-0.1"], "strength"),
        (["--layer-index", "3"], "the model has 2 conv layers"),
    ],
)
def test_bad_embedding_input_is_one_line_and_writes_nothing(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    out = tmp_path / "run"
    args = ["embed", "--scheme", "uchida", *flags, "--dataset", "synthetic", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_the_mark_is_fine_tuned_into_a_trained_model(
    runs: tuple[Path, Path], tmp_path: Path, shared_data_dir: Path
) -> None:
    _, clean = runs
    out = tmp_path / "tuned"
    spec = JobSpec.embed(
        "uchida",
        from_run=clean,
        out=out,
        epochs=4,
        strength=0.1,  # at 0.01 a trained kernel needs more than these 64 steps (BER 0.09)
        optimizer="adam",
        lr=0.01,
        data_dir=str(shared_data_dir),
    )
    assert run(spec).status == "completed"
    before = RunDir.open(clean).summary()["test_acc"]
    summary = RunDir.open(out).summary()
    assert summary["verify"]["ber"] == 0 and summary["test_acc"] > before - 0.05
