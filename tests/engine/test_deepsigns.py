"""The ``deepsigns`` scheme: bits read from a hand-made layer's mean activations, the learnt
centres moving towards the signature, one real embedding against its clean twin, a renamed
and re-saved model, ``verify --white-box``, and the refusals of ``wmtui embed``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from typer.testing import CliRunner

from engine.data import load_dataset
from engine.jobs import JobSpec, run
from engine.models import build_model
from engine.runs import RunDir
from engine.watermarks import Key, get_scheme, load_key
from engine.watermarks.deepsigns import DeepSignsParams
from engine.watermarks.gaussian_mixture import DeepSignsLoss, centre_loss, class_means
from engine.watermarks.white_box import LayerRole
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
#: a short run (128 steps): a key batch every step, 8 bits per class, 8 key images each
FAST = dict(embedding_rate=1, bits=8, key_images=8, gamma2=1.0)


def hand_made_key(projection: torch.Tensor, signature: torch.Tensor) -> Key:
    params = DeepSignsParams(
        bits=projection.shape[0], gaussians=len(signature), layer_kind="linear", layer_index=1
    )
    # two key images per group, 1x1x2 pixels; as floats (x / 255) they are 0 or 1
    key_x = torch.tensor([[0, 255], [255, 255], [255, 0], [255, 0]], dtype=torch.uint8)
    tensors = {
        "projection": projection,
        "signature": signature,
        "key_x": key_x.reshape(4, 1, 1, 2),
        "key_groups": torch.tensor([0, 0, 1, 1]),
    }
    meta = {"num_classes": 2, "num_outputs": 2, "dataset": "hand", "in_shape": [1, 1, 2]}
    return Key("deepsigns", dataclasses.asdict(params), meta, tensors)


def test_bits_and_ber_from_hand_made_activations() -> None:
    layer = nn.Linear(2, 3, bias=False)
    with torch.no_grad():  # activations: a -> [a0, a1, a0 - a1]
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
    model = nn.Sequential(nn.Flatten(), layer, nn.ReLU(), nn.Linear(3, 2))
    key = hand_made_key(
        torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 1.0, 0.0]]),
        torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.uint8),
    )
    means = class_means(
        model, LayerRole("linear", 1), key.tensor("key_x"), key.tensor("key_groups"), 2
    )
    # group 0: images (0, 1) and (1, 1) -> mean [0.5, 1, -0.5]; group 1: (1, 0) twice
    assert means.tolist() == [[0.5, 1.0, -0.5], [1.0, 0.0, 1.0]]
    scheme = get_scheme("deepsigns")
    # A mu: group 0 [0.5, -0.5, 0.5] -> bits 1 0 1; group 1 [1, 1, -1] -> bits 1 1 0
    assert scheme.read(model, key).tolist() == [1, 0, 1, 1, 1, 0]  # type: ignore[attr-defined]
    data = load_dataset("synthetic", None, train_size=16, test_size=16).data
    verdict = scheme.verify(model, key, data, alpha=0.05, test_acc=False)
    assert verdict.ber == pytest.approx(1 / 6) and (verdict.n_key, verdict.matches) == (6, 5)
    assert verdict.p_value == pytest.approx(7 / 64)  # at most one error in six fair coins
    assert not verdict.verified


def test_centre_loss_pulls_to_the_own_centre_and_pushes_from_the_others() -> None:
    acts = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    mu = torch.tensor([[0.0, 0.0], [2.0, 2.0]])
    groups = torch.tensor([0, 1])
    # squared distances to the own centre: 0 and 4; per image and unit: (0 + 4) / 2 / 2
    assert float(centre_loss(acts, mu, groups, separate=False)) == pytest.approx(1.0)
    # to the other centre: 8 and 4, per image and unit 3; pull minus push: 1 - 3
    assert float(centre_loss(acts, mu, groups, separate=True)) == pytest.approx(-2.0)


def test_learnt_centres_move_towards_the_signature() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    x = torch.randint(0, 256, (8, 1, 2, 2), dtype=torch.uint8)
    groups = torch.tensor([0, 1] * 4)
    projection = torch.randn(24, 32)
    signature = torch.randint(0, 2, (2, 24), dtype=torch.uint8)
    term = DeepSignsLoss(
        LayerRole("linear", 1),
        projection,
        signature,
        x,
        groups,
        (1.0, 0.0, 1.0),
        1.0,
        centres="learnt",
    )

    def errors() -> int:
        assert term.mu is not None
        return int(((term.mu @ projection.T > 0).long() != signature).sum())

    term(model, x.float() / 255, groups)
    start = errors()
    for _ in range(30):
        term(model, x.float() / 255, groups)
    assert errors() < start / 2
    assert not any(p.grad is not None for p in model.parameters())  # the term only


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> tuple[Path, Path]:
    """A LeNet-5 embedded with ``deepsigns`` and its clean twin (same seed, same data)."""
    folder = tmp_path_factory.mktemp("deepsigns")
    data = dict(TRAIN, data_dir=str(shared_data_dir))
    marked = folder / "marked"
    assert run(JobSpec.embed("deepsigns", out=marked, **data, **FAST)).status == "completed"
    clean = folder / "clean"
    assert run(JobSpec.train(out=clean, **data)).status == "completed"
    return marked, clean


def test_embedding_reads_back_at_a_small_cost_and_a_clean_twin_reads_coins(
    runs: tuple[Path, Path], shared_data_dir: Path
) -> None:
    marked, clean = runs
    summary = RunDir.open(marked).summary()
    assert summary["verify"]["ber"] == 0 and summary["verify"]["verified"]
    assert summary["test_acc"] > RunDir.open(clean).summary()["test_acc"] - 0.05
    key = load_key(marked / "key")
    assert key.meta["layer"] == {"kind": "conv", "index": 2}
    assert key.tensor("signature").shape == (10, 8) and key.tensor("key_x").shape[0] == 80
    for name in ("key.safetensors", "key.json"):
        assert (marked / "key" / name).stat().st_mode & 0o777 == 0o600
    weights = load_file(str(marked / "model.safetensors"))
    assert not any(k in name for name in weights for k in ("projection", "signature", "key_"))
    data = load_dataset("synthetic", shared_data_dir, train_size=1024, test_size=256).data
    model, _ = RunDir.open(clean).load_model("cpu")
    verdict = get_scheme("deepsigns").verify(model, key, data, 1e-3)
    assert 0.3 < verdict.ber < 0.7 and verdict.p_value > 1e-3 and not verdict.verified  # type: ignore[operator]


def test_a_renamed_and_resaved_model_still_verifies(
    runs: tuple[Path, Path], tmp_path: Path, shared_data_dir: Path
) -> None:
    marked, _ = runs
    model, arch = RunDir.open(marked).load_model("cpu")
    path = tmp_path / "stolen.safetensors"
    save_file(nn.Sequential(nn.Identity(), model).state_dict(), str(path))
    stolen = nn.Sequential(nn.Identity(), build_model(arch))
    stolen.load_state_dict(load_file(str(path)))
    assert all(name.startswith("1.") for name in stolen.state_dict())
    data = load_dataset("synthetic", shared_data_dir, train_size=1024, test_size=256).data
    verdict = get_scheme("deepsigns").verify(stolen, load_key(marked / "key"), data, 1e-3)
    assert verdict.ber == 0 and verdict.verified


def test_verify_cli_reads_the_activations_only_when_asked(runs: tuple[Path, Path]) -> None:
    marked, clean = runs
    result = runner.invoke(app, ["verify", "--run", str(marked), "--white-box", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["ber"], shown["bits"], shown["verified"]) == (0, 80, True)
    assert shown["p_value"] == pytest.approx(2.0**-80)
    result = runner.invoke(
        app, ["verify", "--run", str(clean), "--key", str(marked / "key"), "--white-box"]
    )
    assert result.exit_code == 1 and "NOT VERIFIED" in result.output, result.output
    result = runner.invoke(app, ["verify", "--run", str(marked)])
    assert result.exit_code == 2 and "--white-box" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--bits", "0"], "bits"),
        (["--gamma1", "-0.1"], "gamma1"),
        (["--gamma2", "0"], "gamma2"),
        (["--gaussians", "11"], "has 10 classes"),
        (["--layer-index", "3"], "the model has 2 conv layers"),
        (["--layer-kind", "linear", "--layer-index", "4"], "the model has 3 linear layers"),
    ],
)
def test_bad_embedding_input_is_one_line_and_writes_nothing(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    out = tmp_path / "run"
    args = ["embed", "--scheme", "deepsigns", *flags, "--dataset", "synthetic", "--device", "cpu"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output
    assert not out.exists()


def test_the_mark_is_fine_tuned_into_a_trained_model(
    runs: tuple[Path, Path], tmp_path: Path, shared_data_dir: Path
) -> None:
    _, clean = runs
    out = tmp_path / "tuned"
    spec = JobSpec.embed(
        "deepsigns",
        from_run=clean,
        out=out,
        epochs=8,
        optimizer="adam",
        lr=0.01,
        data_dir=str(shared_data_dir),
        **(FAST | {"gamma2": 3.0}),  # at 1.0 a trained layer needs more than 128 steps
    )
    assert run(spec).status == "completed"
    before = RunDir.open(clean).summary()["test_acc"]
    summary = RunDir.open(out).summary()
    assert summary["verify"]["ber"] == 0 and summary["test_acc"] > before - 0.05
