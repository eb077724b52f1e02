"""``exp-weighting``: EW on a hand-made weight, a reweighted model whose state is an ordinary
model's, one real embedding against its clean twin, and the refusals of ``wmtui embed``."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.data import load_dataset
from engine.jobs import JobSpec, run
from engine.models import Architecture, build_model
from engine.runs import RunDir
from engine.watermarks import get_scheme, load_key
from engine.watermarks.exp_weights import bake, exp_weighted, reweight, unweighted
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
#: a white-square pattern key: learnt in a few tiny epochs (an abstract key costs more accuracy)
KEY = {"key_scheme": "pattern", "key_params": "trigger=square"}


def test_exp_weighting_of_a_hand_made_weight() -> None:
    w = torch.tensor([1.0, -0.5, 0.0, 0.25])
    # T = 2: each weight times exp(2 |w|) / exp(2 * 1)
    expected = [1.0, -0.5 * math.exp(-1.0), 0.0, 0.25 * math.exp(-1.5)]
    assert exp_weighted(w, 2.0).tolist() == pytest.approx(expected)
    assert unweighted(exp_weighted(w, 2.0), 2.0).tolist() == pytest.approx(w.tolist(), abs=1e-7)
    big = torch.randn(5000) * 3.0  # exp(2 * 3 * |w|) would overflow float32 unscaled
    assert torch.isfinite(exp_weighted(big, 2.0)).all()
    assert torch.allclose(unweighted(exp_weighted(big, 2.0), 2.0), big, atol=1e-5)


def test_a_reweighted_model_saves_and_loads_as_an_ordinary_one() -> None:
    arch = Architecture("lenet5", (1, 28, 28), 10)
    torch.manual_seed(0)
    model = build_model(arch)
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(8, 1, 28, 28)
    before = model(x)
    objects = {id(p) for p in model.parameters()}
    assert reweight(model, 2.0) == 5  # 2 convolutions, 3 linear layers
    assert {id(p) for p in model.parameters()} == objects  # the optimizer's stay valid
    reweighted = model(x)
    assert not torch.allclose(reweighted, before)  # the forward reads EW(w), not w
    state = model.state_dict()
    assert set(state) == set(raw)  # the plain names: an ordinary model file
    first = "features.0.weight"
    assert torch.allclose(state[first], exp_weighted(raw[first], 2.0))
    plain = build_model(arch)
    plain.load_state_dict(state)
    assert torch.allclose(plain(x), reweighted, atol=1e-6)
    restored = copy.deepcopy(model)  # a diverged step's restore loads the baked state back
    restored.load_state_dict(state)
    assert torch.allclose(restored(x), reweighted, atol=1e-5)
    assert bake(model) == 5 and bake(model) == 0
    assert {id(p) for p in model.parameters()} == objects
    assert torch.allclose(model(x), reweighted)
    assert set(model.state_dict()) == set(raw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> tuple[Path, Path]:
    """A LeNet-5 trained with a pattern key under EW, and its clean twin (same seed)."""
    folder = tmp_path_factory.mktemp("exp-weighting")
    data = dict(TRAIN, data_dir=str(shared_data_dir))
    marked = folder / "marked"
    assert run(JobSpec.embed("exp-weighting", out=marked, params=KEY, **data)).status == (
        "completed"
    )
    clean = folder / "clean"
    assert run(JobSpec.train(out=clean, **data)).status == "completed"
    return marked, clean


def test_the_key_verifies_at_a_small_cost_and_not_on_the_clean_twin(
    runs: tuple[Path, Path], shared_data_dir: Path
) -> None:
    marked, clean = runs
    summary = json.loads((marked / "summary.json").read_text())
    clean_acc = json.loads((clean / "summary.json").read_text())["test_acc"]
    verdict = summary["verify"]
    assert verdict["verified"] and verdict["retention"] > 0.8
    assert summary["attempts"] == 1  # a key being learnt is never taken for a trapped one
    assert verdict["test_acc"] >= clean_acc - 0.03
    events = (marked / "events.jsonl").read_text()
    assert "read as EW(w, T=2)" in events and "EW(w) baked" in events
    key = load_key(marked / "key")
    assert key.scheme == "exp-weighting" and key.params["key_scheme"] == "pattern"
    assert key.meta["key_params"]["trigger"] == "square"
    # the model file is an ordinary lenet5: it loads, and its verdict is the same from disk
    model, arch = RunDir.open(marked).load_model()
    assert set(model.state_dict()) == set(build_model(arch).state_dict())
    data = load_dataset("synthetic", shared_data_dir, train_size=1024, test_size=256).data
    scheme = get_scheme("exp-weighting")
    again = scheme.verify(model, key, data, 1e-3)
    assert again.verified and again.matches == verdict["matches"]
    twin, _ = RunDir.open(clean).load_model()
    assert not scheme.verify(twin, key, data, 1e-3).verified
    result = runner.invoke(app, ["verify", "--run", str(marked), "--json"])
    assert result.exit_code == 0, result.output


def test_a_key_still_at_most_2_over_k_after_an_epoch_is_a_trap() -> None:
    scheme = get_scheme("exp-weighting")
    ten = type("TenClassKey", (), {"num_classes": 10})()
    assert scheme.stalled(ten, {"key": 0.05}, 0.5) is None  # not an epoch yet
    assert scheme.stalled(ten, {"key": 0.21}, 1.0) is None  # above 2/K: being learnt
    reason = scheme.stalled(ten, {"key": 0.154}, 1.0)  # Fashion-MNIST seed 1's first epoch
    assert reason is not None and "trapped" in reason and "15.4%" in reason
    assert scheme.stalled(ten, {"test": 0.1}, 3.0) is None  # no key score: nothing to judge


def test_a_trapped_embedding_starts_again_from_fresh_weights(tmp_path: Path, monkeypatch) -> None:
    """A simulated trap on the first attempt: the job starts again, runs its whole schedule,
    and ends with one key; embedded into a trained model it never starts again."""
    from engine.watermarks.exp_weighting import ExpWeightingScheme

    calls = {"n": 0}

    def trapped_once(self, key, scores, epoch):
        calls["n"] += 1
        return "simulated trap" if calls["n"] == 1 and epoch >= 1 else None

    monkeypatch.setattr(ExpWeightingScheme, "stalled", trapped_once)
    tiny = {**TRAIN, "train_size": 512, "epochs": 2}
    out = tmp_path / "scratch"
    summary = run(JobSpec.embed("exp-weighting", out=out, **KEY, **tiny)).summary
    assert summary["status"] == "completed" and summary["attempts"] == 2
    assert summary["steps"] == 2 * 512 // 64  # the fresh attempt ran its whole schedule
    assert load_key(out / "key").scheme == "exp-weighting"
    messages = (out / "events.jsonl").read_text()
    assert "simulated trap" in messages and "fresh start 2 of 3" in messages
    calls["n"] = 0
    into = run(JobSpec.embed("exp-weighting", out=tmp_path / "into", from_run=out, **KEY, **tiny))
    assert into.summary["attempts"] == 1 and calls["n"] == 0  # from a model: no fresh start


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "0"], "temperature: must be > 0"),
        (["--key-scheme", "patern"], "did you mean 'pattern'"),
        (["--key-scheme", "uchida"], "unknown key-scheme 'uchida'"),
        (["--key-params", "bogus=1"], "key 'bogus' does not apply to scheme 'abstract'"),
        (["--key-params", "count"], "'count' is not NAME=VALUE"),
        (["--key-scheme", "pattern", "--key-params", "target_label=12"], "10 classes"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    out = tmp_path / "run"
    args = ["embed", "--scheme", "exp-weighting", "--dataset", "synthetic", "--out", str(out)]
    result = runner.invoke(app, args + flags)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()
