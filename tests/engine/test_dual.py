"""Dual embedding's keys, claims and Transform (Li et al., Algorithms 1-3): what a claim
made today must still mean in every later version, and every way a claim can be wrong."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import os
import stat
from pathlib import Path

import pytest
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from engine.errors import ConfigError, RunError
from engine.models import Architecture, build_model
from engine.watermarks.claims import (
    PASSPHRASE_ENV,
    PRIVATE_PEM,
    PUBLIC_PEM,
    Claim,
    create_key_pair,
    load_claim,
    load_private_key,
    passphrase_from_env,
    sign_claim,
    signature_problem,
    transform,
    verifier_string,
)
from engine.watermarks.dual import verify_claim, write_mark


@pytest.fixture(scope="module")
def key_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return create_key_pair(tmp_path_factory.mktemp("keys") / "owner", bits=2048)


def test_transform_byte_layout_is_pinned() -> None:
    """Fixed vectors: a claim made today gives the same mark in any later version."""
    mark = transform(bytes(range(256)), 28, 28, 10, 6)
    assert (mark.row, mark.col, mark.label, mark.extreme) == (13, 12, 6, 1082.0)
    assert "".join(map(str, mark.bits)) == "011100000001101000111010101010110000"
    other = transform(b"wmtui", 32, 32, 43, 8)
    assert (other.row, other.col, other.label, other.extreme, sum(other.bits)) == (
        11,
        4,
        4,
        1482.0,
        34,
    )


def test_transform_follows_the_documented_layout() -> None:
    """The same numbers, recomputed from the docstring's description alone."""
    signature = os.urandom(384)

    def field(name: str) -> bytes:
        return hashlib.sha256(b"wmtui-dual-v1/" + name.encode() + b"/" + signature).digest()

    mark = transform(signature, 28, 28, 10, 6)
    bits = [(field("pattern-0")[i // 8] >> (7 - i % 8)) & 1 for i in range(36)]
    assert list(mark.bits) == bits
    assert mark.row == int.from_bytes(field("position")[:4], "big") % 23
    assert mark.col == int.from_bytes(field("position")[4:8], "big") % 23
    assert mark.label == int.from_bytes(field("label")[:4], "big") % 10
    assert mark.extreme == 1000 + int.from_bytes(field("extreme")[:4], "big") % 2001
    big = transform(signature, 64, 64, 10, 20)  # 400 bits: two pattern blocks
    assert len(big.bits) == 400
    with pytest.raises(ConfigError, match="does not fit a 28x28 image"):
        transform(signature, 28, 28, 10, 29)


def test_the_filter_writes_extremes_in_float32_and_nothing_else() -> None:
    mark = transform(bytes(64), 28, 28, 10, 6)
    x = torch.rand(3, 1, 28, 28)
    null, true = write_mark(x, mark, flipped=False), write_mark(x, mark, flipped=True)
    square = (..., slice(mark.row, mark.row + 6), slice(mark.col, mark.col + 6))
    assert null.dtype == torch.float32
    assert set(null[square].abs().unique().tolist()) == {mark.extreme}
    assert torch.equal(null[square], -true[square])  # the true embedding flips the bits
    outside = torch.ones_like(x, dtype=torch.bool)
    outside[square] = False
    assert torch.equal(null[outside], x[outside]) and torch.equal(true[outside], x[outside])


def test_key_pair_modes_and_no_overwrite(key_folder: Path) -> None:
    assert stat.S_IMODE(key_folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((key_folder / PRIVATE_PEM).stat().st_mode) == 0o600
    assert (key_folder / PUBLIC_PEM).read_text().startswith("-----BEGIN PUBLIC KEY-----")
    with pytest.raises(RunError, match="refusing to replace a private key"):
        create_key_pair(key_folder, bits=2048)


def test_every_bad_private_key_is_one_line(tmp_path: Path, monkeypatch) -> None:
    locked = create_key_pair(tmp_path / "locked", bits=2048, passphrase=b"s3cret")
    with pytest.raises(ConfigError, match=f"is encrypted: set {PASSPHRASE_ENV}"):
        load_private_key(locked, None)
    with pytest.raises(ConfigError, match="wrong passphrase"):
        load_private_key(locked, b"nope")
    monkeypatch.setenv(PASSPHRASE_ENV, "s3cret")
    assert load_private_key(locked, passphrase_from_env()).key_size == 2048
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / PRIVATE_PEM).write_text("not a key at all\n")
    with pytest.raises(ConfigError, match="not a readable PEM private key"):
        load_private_key(corrupt, None)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (foreign / PRIVATE_PEM).write_bytes(pem)
    with pytest.raises(ConfigError, match="not an RSA private key"):
        load_private_key(foreign, None)
    with pytest.raises(ConfigError, match="signing key not found"):
        load_private_key(tmp_path / "missing", None)


def test_a_claim_verifies_only_as_signed(key_folder: Path, tmp_path: Path) -> None:
    private = load_private_key(key_folder)
    claim = sign_claim(private, verifier_string("alice", now=0), {"scheme": "dual", "size": 6})
    assert claim.verifier == "alice|1970-01-01T00:00:00Z"
    assert signature_problem(claim) == ""
    claim.save(tmp_path / "claim.json")
    assert load_claim(tmp_path / "claim.json") == claim
    assert PRIVATE_PEM not in (tmp_path / "claim.json").read_text()

    edited = dataclasses.replace(claim, verifier="mallory|1970-01-01T00:00:00Z")
    assert "does not match" in signature_problem(edited)
    raw = bytearray(claim.signature_bytes)
    raw[0] ^= 1
    tampered = dataclasses.replace(claim, signature=base64.b64encode(bytes(raw)).decode())
    assert "does not match" in signature_problem(tampered)
    other = create_key_pair(tmp_path / "other", bits=2048)
    stolen = dataclasses.replace(claim, public_key=(other / PUBLIC_PEM).read_text())
    assert "does not match" in signature_problem(stolen)
    assert "not a readable PEM" in signature_problem(dataclasses.replace(claim, public_key="x"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "is not JSON"),
        ("[1, 2]", "a claim is a JSON object"),
        ('{"verifier": "a", "signature": "AA=="}', "lacks public_key, params"),
        ('{"verifier": 1, "signature": "AA==", "public_key": "p", "params": {}}', "must be text"),
        ('{"verifier": "a", "signature": "%%%", "public_key": "p", "params": {}}', "not base64"),
    ],
)
def test_a_bad_claim_file_is_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "claim.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_claim(path)


def test_an_owner_is_required() -> None:
    with pytest.raises(ConfigError, match="--owner"):
        verifier_string("  ")


def test_random_claims_do_not_verify_against_an_untrained_model(
    key_folder: Path, small_synthetic
) -> None:
    """Fresh, validly signed claims: the signature holds, the mark is not in the model."""
    torch.manual_seed(0)
    model = build_model(Architecture("lenet5", (1, 28, 28), 10))
    private = load_private_key(key_folder)
    verified = 0
    for i in range(20):
        claim = sign_claim(private, f"someone-{i}|2026", {"scheme": "dual", "size": 6})
        verdict = verify_claim(model, claim, small_synthetic, 1e-3)
        assert verdict.signature_valid
        verified += verdict.verified
    assert verified == 0


def test_claims_round_trip_through_dicts() -> None:
    raw = {"verifier": "a", "signature": "AA==", "public_key": "p", "params": {"size": 6}}
    assert Claim.from_dict(raw, "x").to_dict() == {**raw, "format": 1}


def test_a_scenario_dual_phase_gets_the_schemes_numerics_unless_the_scenario_sets_them() -> None:
    from engine.studies.scenarios import load_scenario, scenario_from_mapping

    piracy = load_scenario("piracy")
    owner = piracy.phases[0].job_spec(piracy.config(), None, None, "piracy")
    assert {k: owner.config[k] for k in ("optimizer", "lr", "clip_grad")} == {
        "optimizer": "adam",
        "lr": 0.001,
        "clip_grad": 5.0,
    }
    square = piracy.phases[2].job_spec(piracy.config(), None, None, "piracy")
    assert square.config["optimizer"] == "sgd"  # pattern keeps the scenario's own numerics
    raw = {
        "train": {"dataset": "synthetic", "lr": 0.0005},
        "phases": [
            {"kind": "embed", "scheme": "dual", "params": {"owner": "a", "signing_key": "demo"}}
        ],
    }
    mine = scenario_from_mapping(raw, name="mine")
    spec = mine.phases[0].job_spec(mine.config(), None, None, "mine")
    assert spec.config["lr"] == 0.0005 and spec.config["optimizer"] == "adam"


# -- the trap: a claim whose null embedding never starts is replaced by a fresh one ---------
def test_a_trapped_claim_is_judged_by_its_null_accuracy_after_an_epoch() -> None:
    from engine.watermarks import get_scheme

    scheme = get_scheme("dual")
    ten = type("TenClassKey", (), {"num_classes": 10})()
    assert scheme.stalled(ten, {"key null": 0.10}, 0.5) is None  # not an epoch yet
    assert scheme.stalled(ten, {"key null": 0.21}, 1.0) is None  # above 2/K: still learning
    reason = scheme.stalled(ten, {"key null": 0.10}, 1.0)
    assert reason is not None and "trapped" in reason and "10.0%" in reason
    assert scheme.stalled(ten, {"test": 0.1}, 3.0) is None  # no null probe: nothing to judge


def test_a_stalled_claim_starts_again_with_a_fresh_claim(
    key_folder: Path, tmp_path: Path, monkeypatch
) -> None:
    """Simulated trap on the first attempt: the job discards that claim and its key, signs
    a fresh one, trains from fresh weights, and the claim it writes is the one it embedded."""
    import json

    from engine.jobs import JobSpec, run
    from engine.runs import RunDir
    from engine.watermarks import load_key
    from engine.watermarks.dual import DualScheme

    signed: list[dict] = []
    keygen, calls = DualScheme.keygen, {"stalled": 0}

    def recording_keygen(self, params, ctx):
        key = keygen(self, params, ctx)
        signed.append(key.meta["claims"][0])
        return key

    def stalled_once(self, key, scores, epoch):
        if epoch >= 1 and len(signed) == 1:
            calls["stalled"] += 1
            return "simulated trap"
        return None

    monkeypatch.setattr(DualScheme, "keygen", recording_keygen)
    monkeypatch.setattr(DualScheme, "stalled", stalled_once)
    out = tmp_path / "run"
    tiny = {"dataset": "synthetic", "train_size": 512, "test_size": 256, "epochs": 2}
    result = run(JobSpec.embed("dual", owner="alice", signing_key=str(key_folder), out=out, **tiny))
    summary = result.summary
    assert summary["status"] == "completed" and summary["attempts"] == 2
    assert calls["stalled"] == 1 and len(signed) == 2
    assert signed[0]["signature"] != signed[1]["signature"]
    written = json.loads((out / "claim.json").read_text())
    assert written["signature"] == signed[1]["signature"]
    assert load_key(out / "key").meta["claims"][0]["signature"] == signed[1]["signature"]
    assert not list(out.glob(".key*"))  # no stale key folder left beside the new one
    events = [json.loads(line) for line in (out / "events.jsonl").open()]
    messages = [e.get("message", "") for e in events]
    starts = [e for e in events if e["event"] == "phase" and e["status"] == "start"]
    assert [s["info"].get("attempt", 1) for s in starts] == [1, 2]  # the plot moves on
    assert any("simulated trap" in m for m in messages)
    assert any("fresh start 2 of 4" in m for m in messages)
    assert summary["steps"] == 2 * 512 // 64  # the fresh attempt ran its whole schedule
    assert RunDir(out).summary()["attempts"] == 2


def test_no_fresh_claims_means_one_attempt(key_folder: Path, tmp_path: Path, monkeypatch) -> None:
    from engine.jobs import JobSpec, run
    from engine.watermarks.dual import DualScheme

    monkeypatch.setattr(DualScheme, "stalled", lambda self, key, scores, epoch: "always")
    tiny = {"dataset": "synthetic", "train_size": 512, "test_size": 256, "epochs": 2}
    spec = JobSpec.embed(
        "dual",
        owner="alice",
        signing_key=str(key_folder),
        fresh_claims=0,
        out=tmp_path / "run",
        **tiny,
    )
    summary = run(spec).summary
    assert summary["attempts"] == 1 and summary["status"] == "completed"
