"""Watermark schemes on tiny synthetic budgets: each test could fail if the trigger were not
applied, the key leaked into the model file, or verification accepted a wrong key."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from engine import commands as cmd
from engine.config import TrainConfig
from engine.data import load_dataset
from engine.errors import ConfigError, RunError
from engine.events import Log, Metrics
from engine.jobs import embed_job, new_run_manifest, train_job, verify_run
from engine.metrics import binomial_tail, log_binomial_tail, make_verdict, predictions
from engine.models import Architecture, build_model
from engine.runs import RunDir, load_tensors
from engine.session import Session
from engine.watermarks import (
    SCHEMES,
    KeyContext,
    get_scheme,
    load_key,
    parse_scheme_params,
    save_key,
    stamp,
)
from engine.watermarks.base import NEXT_TRIGGER
from engine.watermarks.triggers import DECOY_COUNT, make_trigger, parse_trigger
from engine.watermarks.unrelated import decoy_label
from tests.conftest import write_blob_style, write_mnist_style

TRAIN, TEST = 2000, 500


def tiny_config(data_dir: Path, **changes: Any) -> TrainConfig:
    base = dict(
        dataset="synthetic",
        train_size=TRAIN,
        test_size=TEST,
        epochs=4,
        optimizer="adam",
        lr=0.003,
        eval_every=40,
        device="cpu",
        data_dir=str(data_dir),
    )
    return TrainConfig.from_mapping(base | changes)


def run_session(job: Any, run: RunDir | None, on_event: Any = None) -> tuple[Session, list]:
    session = Session(job, [run.event_sink()] if run else []).start()
    events = []
    for event in session.events():
        events.append(event)
        if on_event is not None:
            on_event(session, event)
    assert session.status == "completed", [e for e in events if e.kind == "error"]
    return session, events


def embed(folder: Path, config: TrainConfig, scheme: str, **values: Any) -> Path:
    params = parse_scheme_params(scheme, values)
    run = RunDir.create(folder, new_run_manifest(config, "embed"))
    run_session(embed_job(config, scheme, params, run), run)
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> dict[str, Path]:
    """One clean and one watermarked run per scheme, trained once for the module."""
    root = tmp_path_factory.mktemp("wm-runs")
    config = tiny_config(shared_data_dir)
    clean = RunDir.create(root / "clean", new_run_manifest(config, "train"))
    run_session(train_job(config, clean), clean)
    blob_dir = root / "blobs"
    write_blob_style(blob_dir / "mnist")
    return {
        "clean": root / "clean",
        # telling the 15x5 px word from other words takes a longer tiny budget
        "pattern": embed(root / "pattern", tiny_config(shared_data_dir, epochs=8), "pattern"),
        "square": embed(root / "square", config, "pattern", trigger="square", target_label=3),
        "abstract": embed(root / "abstract", config, "abstract", count=10, inject_ratio=0.25),
        # telling its own pattern from other faint noise takes a longer tiny budget
        "newlabel": embed(
            root / "newlabel",
            tiny_config(shared_data_dir, epochs=10),
            "newlabel",
            key_fraction=0.05,
            beta=0.2,
            inject_ratio=0.25,
            decoy_ratio=0.25,
        ),
        # the paper's recipe without decoys: learns "any faint noise -> K"
        "newlabel-nodecoy": embed(
            root / "newlabel-nodecoy",
            config,
            "newlabel",
            key_fraction=0.05,
            beta=0.2,
            decoy_ratio=0,
        ),
        # memorising its own images (not "any image like these") takes a longer tiny budget
        "unrelated": embed(
            root / "unrelated",
            tiny_config(blob_dir, epochs=20),
            "unrelated",
            source="mnist",
            count=50,
            inject_ratio=0.25,
            decoy_ratio=0.5,
        ),
    }


@pytest.fixture(scope="module")
def data(shared_data_dir: Path):
    return load_dataset("synthetic", shared_data_dir, train_size=TRAIN, test_size=TEST).data


# -- statistics ---------------------------------------------------------------------------
def test_binomial_tail_matches_direct_sum_and_survives_the_far_tail() -> None:
    n, p = 30, 0.1
    for m in (0, 1, 5, 17, 30):
        direct = sum(math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(m, n + 1))
        assert binomial_tail(m, n, p) == pytest.approx(direct, rel=1e-9)
    assert binomial_tail(9000, 9000, 0.1) == 0.0  # underflows...
    assert log_binomial_tail(9000, 9000, 0.1) == pytest.approx(9000 * math.log(0.1))  # ...not this


def test_verdict_uses_the_higher_of_chance_and_the_clean_rate() -> None:
    # 30 of 100 key samples match; by chance (1/10) that is damning...
    assert make_verdict(30, 100, chance=0.1, alpha=1e-3).verified
    # ...but not for a model that gives the key label to 28% of the clean counterparts.
    biased = make_verdict(30, 100, chance=0.1, alpha=1e-3, clean_rate=0.28)
    assert biased.null_rate == 0.28 and not biased.verified
    assert make_verdict(3, 100, chance=0.1, alpha=1e-3, clean_rate=0.01).null_rate == 0.1


def test_verdict_null_includes_the_decoy_rate_and_says_so() -> None:
    fooled = make_verdict(90, 100, chance=0.1, alpha=1e-3, clean_rate=0.02, decoy_rate=0.85)
    assert fooled.null_rate == 0.85 and not fooled.verified
    assert fooled.null_reason.startswith("model's rate on decoy triggers")
    assert "clean rate 0.0200" in fooled.null_reason
    own = make_verdict(99, 100, chance=0.1, alpha=1e-3, clean_rate=0.02, decoy_rate=0.03)
    assert own.null_rate == 0.1 and own.verified and own.null_reason.startswith("chance 1/10")


# -- registry and params -------------------------------------------------------------------
def test_schemes_are_registered_with_params() -> None:
    assert {"pattern", "abstract", "unrelated", "newlabel"} <= set(SCHEMES.names())
    assert all(dataclasses.is_dataclass(p.params) for p in SCHEMES)


@pytest.mark.parametrize(
    ("scheme", "values", "fragment"),
    [
        ("patern", {}, "did you mean 'pattern'"),
        ("pattern", {"trigger": "sqare"}, "did you mean 'square'"),
        ("pattern", {"key_fraction": 1.0}, "key-fraction: must be < 1.0"),
        ("pattern", {"key_fraction": 0}, "key-fraction: must be > 0.0"),
        ("pattern", {"count": 5}, "key 'count' does not apply to scheme 'pattern'"),
        ("pattern", {"position": "middle"}, "expected br, bl, tr, tl or X,Y"),
        ("newlabel", {"beta": 0}, "beta: must be > 0.0"),
        ("abstract", {"target_label": 2}, "does not apply to scheme 'abstract'"),
    ],
)
def test_bad_params_are_rejected_at_parse_time(scheme: str, values: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse_scheme_params(scheme, values)
    assert fragment in str(info.value)


def test_target_label_beyond_the_classes_is_refused(data) -> None:
    params = parse_scheme_params("pattern", {"target_label": 10})
    with pytest.raises(ConfigError, match="10 classes"):
        get_scheme("pattern").keygen(params, KeyContext(data, "lenet5", 0))


# -- triggers -------------------------------------------------------------------------------
def test_stamp_writes_the_trigger_only_under_its_mask() -> None:
    pattern, mask = make_trigger(
        parse_trigger("text"), (1, 28, 28), size=0, position="br", blend=1.0, seed=0
    )
    x = torch.full((2, 1, 28, 28), 0.5)
    out = stamp(x, pattern, mask)
    inside = mask[0] > 0
    assert inside[-8:, -20:].any() and not inside[:14].any()  # bottom right only
    assert torch.equal(out[:, :, ~inside], x[:, :, ~inside])
    assert torch.allclose(out[0, 0][inside], pattern[0][inside])
    assert pattern[0][inside].max() == 1.0 and pattern[0][inside].min() < 0.2  # white on black


def test_trigger_image_missing_bad_or_other_size(tmp_path: Path) -> None:
    def build(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        return make_trigger(
            parse_trigger(f"image:{path}"),
            (1, 28, 28),
            size=6,
            position="tl",
            blend=1.0,
            seed=0,
            log=said.append,
        )

    said: list[str] = []
    with pytest.raises(ConfigError, match="trigger image not found"):
        build(tmp_path / "missing.png")
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ConfigError, match="not a readable image"):
        build(tmp_path / "notes.txt")
    Image.new("RGB", (40, 40), (255, 0, 0)).save(tmp_path / "logo.png")
    _, mask = build(tmp_path / "logo.png")
    assert mask[0, 1:7, 1:7].eq(1).all() and mask.sum() == 36
    assert said and "mode RGB -> L" in said[0] and "40x40 -> 6x6" in said[0]


def test_trigger_position_must_fit() -> None:
    with pytest.raises(ConfigError, match="must start within"):
        make_trigger(parse_trigger("square"), (1, 28, 28), size=4, position="26,3", blend=1, seed=0)


# -- pattern --------------------------------------------------------------------------------
def test_pattern_key_verifies_and_wrong_keys_do_not(runs, data) -> None:
    own = verify_run(runs["pattern"], device="cpu")
    assert own["verified"] and own["p_value"] < 1e-6 and own["retention"] > 0.9
    assert own["n_key"] == int((data.test_y != 7).sum())  # held-out TEST images only
    # the square key (another trigger, label 3) against the TEST model, and vice versa
    other = verify_run(runs["pattern"], runs["square"] / "key", device="cpu")
    assert not other["verified"] and other["retention"] < 0.2
    # the key against a clean model trained with the same seed
    clean = verify_run(runs["clean"], runs["pattern"] / "key", device="cpu")
    assert not clean["verified"] and clean["retention"] < 0.2
    # a freshly generated key (noise trigger, another seed and label)
    fresh = get_scheme("pattern").keygen(
        parse_scheme_params("pattern", {"trigger": "noise", "target_label": 2}),
        KeyContext(data, "lenet5", 99),
    )
    model, _ = RunDir(runs["pattern"]).load_model()
    assert not get_scheme("pattern").verify(model, fresh, data, 1e-3).verified


def test_fresh_noise_key_in_the_same_corner_and_target_does_not_claim_the_model(runs, data) -> None:
    """A noise patch where the TEST trigger sits, with the same target 7: whatever the TEST
    backdoor answers for it, the same model answers for the decoys too."""
    model, _ = RunDir(runs["pattern"]).load_model()
    scheme = get_scheme("pattern")
    params = parse_scheme_params("pattern", {"trigger": "noise", "target_label": 7})
    own = scheme.verify(model, load_key(runs["pattern"] / "key"), data, 1e-3)
    assert own.verified and own.p_value < 1e-6 and own.decoy_rate is not None
    for seed in range(1, 6):
        fresh = scheme.verify(
            model, scheme.keygen(params, KeyContext(data, "lenet5", seed)), data, 1e-3
        )
        assert not fresh.verified, fresh
        assert fresh.null_rate >= fresh.decoy_rate


def test_pattern_decoys_share_the_mask_not_the_content(runs, data) -> None:
    key = load_key(runs["pattern"] / "key")
    samples = get_scheme("pattern").key_samples(key, data)
    assert len(samples.decoys) >= 4
    x = samples.x[:4].float() / 255
    inside = key.tensors["mask"][0] > 0
    real = samples.transform(x)
    for decoy in samples.decoys[:DECOY_COUNT]:  # the noise decoys (then other words)
        fake = decoy(x)
        assert torch.allclose(fake[:, :, ~inside], x[:, :, ~inside])  # same place and size
        assert not torch.allclose(fake[:, :, inside], real[:, :, inside])  # other content


def test_pattern_response_needs_the_trigger(runs, data) -> None:
    """Untriggered test images are not called 'target' at anything like the key rate."""
    model, _ = RunDir(runs["pattern"]).load_model()
    key = load_key(runs["pattern"] / "key")
    samples = get_scheme("pattern").key_samples(key, data)
    stamped = (predictions(model, samples.x, samples.transform) == 7).float().mean()
    plain = (predictions(model, samples.x) == 7).float().mean()
    assert stamped > 0.9 and plain < 0.1


def test_pattern_training_source_stamps_non_target_images(runs, data) -> None:
    key = load_key(runs["pattern"] / "key")
    source, decoy = get_scheme("pattern").training_sources(key, 64, torch.device("cpu"))
    assert decoy.name == "decoy" and len(set(decoy.y.tolist())) > 1  # true labels
    x8 = key.tensors["train_x"][:8].float() / 255
    inside = key.tensors["mask"][0] > 0
    fake = decoy.transform(x8.clone())
    assert torch.allclose(fake[:, :, ~inside], x8[:, :, ~inside])
    assert not torch.allclose(fake[:, :, inside], source.transform(x8)[:, :, inside])
    assert source.per_batch == round(64 * 0.1) and (source.y == 7).all()
    assert len(source.x) == round(0.05 * TRAIN)
    x = source.x[:8].float() / 255
    mask = key.tensors["mask"]
    stamped = source.transform(x)
    assert torch.allclose(
        stamped[:, :, mask[0] > 0],
        key.tensors["pattern"][:, mask[0] > 0]
        .expand(8, -1, -1)
        .reshape(8, 1, -1)
        .squeeze(1)
        .unsqueeze(1),
        atol=1e-6,
    )


def test_key_is_secret_and_apart_from_the_model(runs) -> None:
    folder = runs["pattern"]
    for name in ("key.json", "key.safetensors"):
        assert oct(os.stat(folder / "key" / name).st_mode)[-3:] == "600"
    record = json.loads((folder / "key" / "key.json").read_text())
    assert record["dataset"] == "synthetic" and record["model"] == "lenet5"
    assert record["in_shape"] == [1, 28, 28] and record["num_classes"] == 10
    arch_names = set(build_model(Architecture("lenet5", (1, 28, 28), 10)).state_dict())
    assert set(load_tensors(folder / "model.safetensors", "model")) == arch_names
    checkpoint = load_tensors(folder / "checkpoint.safetensors", "checkpoint")
    assert all(k.startswith(("model/", "optimizer/")) for k in checkpoint)
    key = load_key(folder / "key").tensors
    trigger = key["pattern"][key["mask"].expand_as(key["pattern"]) > 0].numpy().tobytes()
    first_key_image = key["train_x"][0].numpy().tobytes()
    for blob in ("model.safetensors", "checkpoint.safetensors", "model.json", "summary.json"):
        text = (folder / blob).read_bytes()
        assert trigger[:64] not in text and first_key_image[300:400] not in text
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["verify"]["verified"] and summary["retention"]["key"] > 0.9


def test_key_folder_is_never_overwritten_and_corruption_is_a_run_error(tmp_path, runs) -> None:
    key = load_key(runs["pattern"] / "key")
    save_key(tmp_path / "k", key)
    with pytest.raises(RunError, match="already holds a key"):
        save_key(tmp_path / "k", key)
    (tmp_path / "k" / "key.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunError, match="corrupt"):
        load_key(tmp_path / "k")
    with pytest.raises(RunError, match="key directory not found"):
        load_key(tmp_path / "nope")


def test_key_for_other_data_is_refused(tmp_path, runs) -> None:
    other = load_dataset("mnist", write_dir(tmp_path), train_size=64, test_size=32).data
    key = get_scheme("pattern").keygen(
        parse_scheme_params("pattern", {}), KeyContext(other, "lenet5", 0)
    )
    save_key(tmp_path / "mnist-key", key)
    with pytest.raises(RunError, match="dataset 'mnist' vs the run's 'synthetic'"):
        verify_run(runs["pattern"], tmp_path / "mnist-key", device="cpu")


def write_dir(tmp_path: Path) -> Path:
    write_mnist_style(tmp_path / "mnist", n_train=64, n_test=32)
    return tmp_path


# -- abstract, newlabel, unrelated ----------------------------------------------------------
def test_abstract_key_verifies_and_a_fresh_one_does_not(runs, data) -> None:
    own = verify_run(runs["abstract"], device="cpu")
    assert own["verified"] and own["retention"] >= 0.9 and own["null_rate"] == 0.1
    model, _ = RunDir(runs["abstract"]).load_model()
    scheme = get_scheme("abstract")
    for seed in (1, 2, 3):
        fresh = scheme.keygen(
            parse_scheme_params("abstract", {"count": 10}), KeyContext(data, "lenet5", seed)
        )
        assert not torch.equal(fresh.tensors["x"], load_key(runs["abstract"] / "key").tensors["x"])
        assert not scheme.verify(model, fresh, data, 1e-3).verified
    assert not verify_run(runs["clean"], runs["abstract"] / "key", device="cpu")["verified"]


def test_abstract_images_folder(tmp_path, data) -> None:
    Image.new("RGB", (50, 30), (0, 200, 0)).save(tmp_path / "a.png")
    Image.new("L", (28, 28), 80).save(tmp_path / "b.png")
    said: list[str] = []
    params = parse_scheme_params("abstract", {"images": str(tmp_path)})
    key = get_scheme("abstract").keygen(params, KeyContext(data, "lenet5", 0, log=said.append))
    assert key.tensors["x"].shape == (2, 1, 28, 28) and "resized 1 of 2" in said[0]
    (tmp_path / "c.txt").write_text("hello")
    with pytest.raises(ConfigError, match=r"c\.txt is not a readable image"):
        get_scheme("abstract").keygen(params, KeyContext(data, "lenet5", 0))


def test_newlabel_adds_a_class_and_verifies(runs, data) -> None:
    model, arch = RunDir(runs["newlabel"]).load_model()
    assert arch.num_classes == 11
    own = verify_run(runs["newlabel"], device="cpu")
    assert own["verified"] and own["retention"] > 0.5 and own["null_rate"] >= 1 / 11
    summary = json.loads((runs["newlabel"] / "summary.json").read_text())
    assert summary["test_acc"] > 0.6  # over the first K outputs
    key = load_key(runs["newlabel"] / "key")
    samples = get_scheme("newlabel").key_samples(key, data)
    assert (predictions(model, samples.x) == 10).float().mean() < 0.1  # needs the perturbation
    # a clean K-output model can never answer the new class
    assert verify_run(runs["clean"], runs["newlabel"] / "key", device="cpu")["matches"] == 0


def test_newlabel_owner_verifies_and_fresh_keys_do_not(runs, data) -> None:
    """Trained with decoys, the model answers K for its own pattern only."""
    model, _ = RunDir(runs["newlabel"]).load_model()
    own = verify_run(runs["newlabel"], device="cpu")
    assert own["verified"] and own["p_value"] < 1e-6 and own["decoy_rate"] < 0.5
    scheme = get_scheme("newlabel")
    params = parse_scheme_params("newlabel", {"key_fraction": 0.05, "beta": 0.2})
    for seed in (1, 2, 3):
        fresh = scheme.verify(
            model, scheme.keygen(params, KeyContext(data, "lenet5", seed)), data, 1e-3
        )
        assert not fresh.verified and fresh.retention < own["retention"] / 2, fresh


def test_newlabel_without_decoys_answers_any_noise_and_the_decoy_null_catches_it(
    runs, data
) -> None:
    model, _ = RunDir(runs["newlabel-nodecoy"]).load_model()
    scheme = get_scheme("newlabel")
    params = parse_scheme_params("newlabel", {"key_fraction": 0.05, "beta": 0.2})
    for seed in (1, 2, 3):
        fresh = scheme.verify(
            model, scheme.keygen(params, KeyContext(data, "lenet5", seed)), data, 1e-3
        )
        assert not fresh.verified, fresh
        assert fresh.null_reason.startswith("model's rate on decoy triggers")


def test_newlabel_decoy_source_keeps_true_labels_and_other_patterns(runs, data) -> None:
    key = load_key(runs["newlabel"] / "key")
    sources = get_scheme("newlabel").training_sources(key, 64, torch.device("cpu"))
    assert [s.name for s in sources] == ["key", "decoy"]
    decoy = sources[1]
    assert decoy.per_batch == round(64 * 0.25) and len(decoy.x) == round(0.05 * TRAIN)
    assert set(decoy.y.tolist()) <= set(range(10)) and len(set(decoy.y.tolist())) > 1
    x = torch.full((8, 1, 28, 28), 0.5)
    delta = (decoy.transform(x.clone()) - x) / 0.2
    assert torch.allclose(delta.abs(), torch.ones_like(delta), atol=1e-5)
    pattern = key.tensors["pattern"]
    agreement = (delta.sign() == pattern).float().mean(dim=(1, 2, 3))
    assert (agreement < 0.7).all() and not torch.equal(delta[0], delta[1])


def test_unrelated_key_verifies_and_another_target_does_not(runs, data) -> None:
    own = verify_run(runs["unrelated"], device="cpu")
    assert own["verified"] and own["retention"] > 0.9
    key = load_key(runs["unrelated"] / "key")
    assert key.params["source"] == "mnist" and key.tensors["x"].shape[1:] == (1, 28, 28)
    model, _ = RunDir(runs["unrelated"]).load_model()
    scheme = get_scheme("unrelated")
    other = dataclasses.replace(key, params={**key.params, "target_label": 2})
    assert not scheme.verify(model, other, data, 1e-3).verified
    # other images of the same source with the same target are a claim on the domain, not on
    # this model's secret: the held-out null (the model's rate on unseen source images) stops it
    fresh = dataclasses.replace(key, tensors={**key.tensors, "x": key.tensors["null_x"][:50]})
    verdict = scheme.verify(model, fresh, data, 1e-3)
    assert not verdict.verified and "held-out mnist images" in verdict.null_reason
    decoy = decoy_label(int(key.meta["seed"]), 7, 10)
    assert decoy != 7 and decoy == decoy_label(int(key.meta["seed"]), 7, 10)


# -- switching mid-run ----------------------------------------------------------------------
def test_set_trigger_and_label_switch_the_key_and_track_both(tmp_path, shared_data_dir) -> None:
    config = tiny_config(shared_data_dir, epochs=4, eval_every=10)
    run = RunDir.create(tmp_path / "run", new_run_manifest(config, "embed"))
    sent: list[str] = []

    def steer(session: Session, event: Any) -> None:
        if isinstance(event, Metrics) and event.step >= 20 and not sent:
            session.send(cmd.SetTrigger("square"))
            sent.append("trigger")
        elif isinstance(event, Metrics) and event.step >= 40 and sent == ["trigger"]:
            session.send(cmd.SetTargetLabel(3))
            session.send(cmd.SetTargetLabel(12))  # refused: only 10 classes
            sent.append("label")

    params = parse_scheme_params("pattern", {})
    session, events = run_session(embed_job(config, "pattern", params, run), run, steer)
    logs = [e.message for e in events if isinstance(e, Log)]
    # one name per key set: the log's, the legend's (retention) and the folder's
    assert any("as key-2" in m and "square" in m for m in logs)
    assert any("as key-3" in m and "target label 3" in m for m in logs)
    assert any("target label switch refused" in m and "10 classes" in m for m in logs)
    final = [e for e in events if isinstance(e, Metrics) and e.test_acc is not None][-1]
    assert set(final.retention) == {"key", "key-2", "key-3"}
    verdicts = session.summary["verdicts"]
    assert verdicts["key-3"]["verified"]
    assert load_key(tmp_path / "run" / "key-3").params["target_label"] == 3
    assert load_key(tmp_path / "run" / "key-2").params["trigger"] == "square"
    assert load_key(tmp_path / "run" / "key").params["trigger"] == "text"


def test_switching_what_a_scheme_does_not_have_is_refused(data) -> None:
    scheme = get_scheme("abstract")
    key = scheme.keygen(parse_scheme_params("abstract", {"count": 3}), KeyContext(data, "l", 0))
    with pytest.raises(ConfigError, match="has no trigger to switch"):
        scheme.switch(key, KeyContext(data, "lenet5", 0), trigger="square")


def test_a_switch_to_the_same_trigger_is_refused_and_next_steps_from_the_keys_own(data) -> None:
    scheme = get_scheme("pattern")
    kctx = KeyContext(data, "lenet5", 0)
    key = scheme.keygen(parse_scheme_params("pattern", {"trigger": "square"}), kctx)
    with pytest.raises(ConfigError, match="already square: nothing to switch"):
        scheme.switch(key, kctx, trigger="square")
    with pytest.raises(ConfigError, match="target label is already 7"):
        scheme.switch(key, kctx, target=7)
    after_square = scheme.switch(key, kctx, trigger=NEXT_TRIGGER)
    assert after_square.params["trigger"] == "noise"
    assert scheme.switch(after_square, kctx, trigger=NEXT_TRIGGER).params["trigger"] == "text"


def test_live_key_sets_are_bounded_and_every_switched_key_stays_on_disk(
    tmp_path, shared_data_dir
) -> None:
    config = tiny_config(shared_data_dir, epochs=4, eval_every=5)
    run = RunDir.create(tmp_path / "run", new_run_manifest(config, "embed"))
    labels = iter([1, 2, 3, 4, 5, 6])

    def steer(session: Session, event: Any) -> None:
        label = next(labels, None) if isinstance(event, Metrics) else None
        if label is not None:
            session.send(cmd.SetTargetLabel(label))

    params = parse_scheme_params("pattern", {})
    session, events = run_session(embed_job(config, "pattern", params, run), run, steer)
    logs = [e.message for e in events if isinstance(e, Log)]
    assert any("no longer tracking key-2" in m for m in logs)
    final = [e for e in events if isinstance(e, Metrics) and e.test_acc is not None][-1]
    assert set(final.retention) == {"key", "key-5", "key-6", "key-7"}
    assert set(session.summary["verdicts"]) == set(final.retention)
    assert len(session.summary["keys"]) == 7
    assert all(
        load_key(tmp_path / "run" / f"key-{n}").params["target_label"] == n - 1 for n in range(2, 8)
    )
