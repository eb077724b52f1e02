"""The piracy attack on the job layer: the pirate's own key is embedded and then refereed on
the referee's test data; its private key lives only for the attack."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from engine.jobs import JobSpec, run
from engine.runs import RunDir
from engine.watermarks import load_key
from engine.watermarks.claims import create_key_pair

TINY = {
    "dataset": "synthetic",
    "train_size": 1024,
    "test_size": 256,
    "epochs": 1,
    "optimizer": "adam",
    "lr": 0.001,
    "clip_grad": 5.0,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def dual_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("owner")
    keys = create_key_pair(root / "keys", bits=2048)
    spec = JobSpec.embed("dual", owner="alice", signing_key=str(keys), out=root / "run", **TINY)
    return run(spec).path


@pytest.mark.parametrize("pirate", ["dual", "pattern"])
def test_piracy_embeds_the_pirates_key_and_the_referee_verifies_it(
    dual_model: Path, tmp_path: Path, pirate: str
) -> None:
    out = tmp_path / "pirated"
    spec = JobSpec.attack(
        "piracy", run=dual_model, scheme=pirate, data_fraction=0.5, epochs=2, out=out
    )
    result = run(spec)
    summary = result.summary
    # the owner's marks and the pirate's are both streamed and scored before/after
    assert {"key null", "key true"} <= set(summary["before"]["retention"])
    assert any(name.startswith("pirate") for name in summary["after"]["retention"])
    (claim,) = summary["claims"]
    assert claim["key"].startswith(pirate)
    assert summary["claim_verified"] == claim["verified"]
    expected = claim["p_value"] < 1e-3 and (
        pirate != "dual" or (claim["null_acc"] >= 0.5 and claim["true_acc"] >= 0.5)
    )
    assert claim["verified"] == expected
    key = load_key(out / "pirate-key")
    assert key.scheme == pirate
    if pirate == "dual":
        assert claim["signature_valid"] is True
        assert not Path(key.params["signing_key"]).exists()  # the throwaway key pair is gone
    assert not list(out.rglob("private.pem"))
    assert RunDir(out).summary()["status"] == "completed"


def test_a_pirate_whose_training_diverges_keeps_the_model_and_claims_nothing(
    dual_model: Path, tmp_path: Path
) -> None:
    """The paper's pirate (plain SGD on +-lambda inputs, no clipping) can blow up: the loop
    restores the last good model, the summary says where it diverged, the claim fails."""
    out = tmp_path / "diverged"
    spec = JobSpec.attack(
        "piracy",
        run=dual_model,
        scheme="dual",
        optimizer="sgd",
        lr=100.0,  # the cap: the owner's key (and so the model) signs the time, so be sure
        clip_grad=0.0,
        data_fraction=0.5,
        epochs=2,
        out=out,
    )
    summary = run(spec).summary
    assert summary["status"] == "completed"
    assert summary["info"]["diverged_at"] >= 1
    assert summary["claim_verified"] is False
    # the loop put back its last evaluated model: finite weights, an accuracy to report
    assert 0.0 <= summary["after"]["test_acc"] <= 1.0
    model, _ = RunDir(out).load_model("cpu")
    assert all(torch.isfinite(p).all() for p in model.parameters())
