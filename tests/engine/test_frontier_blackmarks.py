"""The schemes whose keys are adversarial examples of a trained model: ``frontier`` (keys
within eps of their sources, half of them flipping the model they were made from) and
``blackmarks`` (its signature decoded with BER 0 from the marked model), through the real
train, embed and verify jobs on tiny synthetic data."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from engine.errors import ConfigError
from engine.events import Log
from engine.jobs import JobSpec, run
from engine.runs import RunDir
from engine.session import Session
from engine.watermarks import KeyContext, get_scheme, load_key, parse_scheme_params
from engine.watermarks.adversarial import eps_levels, predict
from engine.watermarks.blackmarks import compose, two_means

DATA = {"dataset": "synthetic", "train_size": 2048, "test_size": 256, "device": "cpu"}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("adv") / "clean"
    run(JobSpec.train(out=out, epochs=8, schedule="constant", **DATA))
    return out


@pytest.fixture(scope="module")
def context(clean: Path) -> KeyContext:
    from engine.data import load_dataset

    model, _ = RunDir.open(clean).load_model("cpu")
    data = load_dataset("synthetic", train_size=2048, test_size=256).data
    return KeyContext(data, "lenet5", 3, trained_model=model)


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_frontier_keys_lie_within_eps_of_their_sources(context: KeyContext, eps: float) -> None:
    """L-inf in [0,1] pixels on the stored uint8 images: rounding is clamped to whole
    levels within eps (0.05 is 12.75 levels: 12), and the bound is reached, not loose."""
    params = parse_scheme_params("frontier", {"eps": eps})
    key = get_scheme("frontier").keygen(params, context)
    gap = (key.tensors["key_x"].int() - key.tensors["source_x"].int()).abs()
    assert gap.max() <= eps_levels(eps) and float(gap.max()) / 255 <= eps
    assert gap.max() == eps_levels(eps)
    # half true, half false adversaries of the model they were made from, all labelled with
    # their source's class: that model answers exactly the false half
    assert context.trained_model is not None
    answers = predict(context.trained_model, key.tensors["key_x"])
    flipped = answers != key.tensors["key_y"]
    assert torch.equal(flipped, key.tensors["true_adversary"])
    assert int(flipped.sum()) * 2 == len(flipped) == 100
    assert torch.equal(
        predict(context.trained_model, key.tensors["source_x"]), key.tensors["key_y"]
    )


def test_frontier_verifies_the_marked_model_and_not_the_one_it_was_made_from(
    clean: Path, tmp_path: Path
) -> None:
    marked = run(JobSpec.embed("frontier", from_run=clean, out=tmp_path / "fr", epochs=2, **DATA))
    verdict = marked.summary["verify"]
    assert verdict["verified"] and verdict["retention"] > verdict["null_rate"]
    assert "held-out adversaries" in verdict["null_reason"]
    before = run(JobSpec.verify(run=clean, key=tmp_path / "fr" / "key", device="cpu")).summary
    assert before["retention"] == 0.5 and not before["verified"]


def test_blackmarks_decodes_its_own_signature_with_ber_0(clean: Path, tmp_path: Path) -> None:
    values = {"bits": 40, "null_count": 48, "expansion": 30, "finetune_batches": 40}
    marked = run(
        JobSpec.embed("blackmarks", from_run=clean, out=tmp_path / "bm", epochs=3, **values, **DATA)
    )
    key = load_key(tmp_path / "bm" / "key")
    assert len(key.tensors["signature"]) == len(key.tensors["key_x"]) > 0
    verdict = marked.summary["verify"]
    assert verdict["ber"] == 0.0 and verdict["retention"] == 1.0 and verdict["verified"]
    # every key was pushed into the cluster its bit names, within eps of its source
    assert torch.equal(key.tensors["encoding"][key.tensors["key_y"]], key.tensors["signature"])
    gap = (key.tensors["key_x"].int() - key.tensors["source_x"].int()).abs()
    assert gap.max() <= eps_levels(0.1)
    # a model trained apart (another seed) decodes the signature no better than the null
    other = run(
        JobSpec.train(out=tmp_path / "other", epochs=8, schedule="constant", seed=1, **DATA)
    )
    apart = run(JobSpec.verify(run=other.path, key=tmp_path / "bm" / "key", device="cpu")).summary
    assert not apart["verified"] and apart["ber"] > 0.1


def test_two_means_splits_two_obvious_groups_and_compose_follows_the_signature() -> None:
    points = torch.tensor([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.0, 0.2], [5.1, 4.9]])
    labels = two_means(points)
    assert labels.tolist() in ([0, 0, 1, 0, 1], [1, 1, 0, 1, 0])
    ok = torch.tensor([True] * 10 + [False] * 2)
    bit = torch.tensor([0, 1] * 6)
    signature = torch.tensor([1, 1, 0, 1, 1, 1, 1, 0])
    key = compose(ok, bit, signature, torch.Generator().manual_seed(0))
    assert torch.equal(bit[key], signature[:6]) and int(key.max()) < 10  # bit 1 ran out


@pytest.mark.parametrize("scheme", ["frontier", "blackmarks"])
def test_a_scheme_that_needs_a_trained_model_refuses_to_start_without_from(
    scheme: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=f"{scheme} makes its keys from a trained model"):
        JobSpec.embed(scheme, out=tmp_path / "x", **DATA).validate()
    assert not (tmp_path / "x").exists()


def test_stop_while_blackmarks_makes_its_keys_ends_within_2_s(clean: Path, tmp_path: Path) -> None:
    """Key generation takes minutes at full scale (targeted FGSM, a fine-tuned variant): it
    answers Stop like the training steps do."""
    out = tmp_path / "stopped"
    values = {"finetune_batches": 100_000, "expansion": 30}
    built = JobSpec.embed("blackmarks", from_run=clean, out=out, **values, **DATA).build()
    session = Session(built.job, [built.run.event_sink()]).start()
    seen: list[Log] = []
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline:
        seen += [e for e in session.poll() if isinstance(e, Log) and "clusters" in e.message]
        time.sleep(0.05)
    assert seen, "no key generation within 60 s"
    time.sleep(0.5)
    started = time.monotonic()
    assert session.stop(timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert RunDir(out).summary()["status"] == "stopped"
    assert not (out / "key").exists()
