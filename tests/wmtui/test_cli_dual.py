"""``wmtui keygen``, ``embed --scheme dual`` and ``verify --claim`` as an owner and a verifier
use them: modes, refusals before anything is written, and the private key kept out of
everything a run holds."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from engine.watermarks.claims import PASSPHRASE_ENV, PRIVATE_PEM
from wmtui.cli.main import app

runner = CliRunner()
TINY = ["--dataset", "synthetic", "--train-size", "512", "--test-size", "256", "--epochs", "1"]
TINY += ["--optimizer", "adam", "--lr", "0.001", "--clip-grad", "5", "--device", "cpu"]


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("owner") / "keys"
    result = runner.invoke(app, ["keygen", "--out", str(folder), "--bits", "2048"])
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture(scope="module")
def dual_run(keys: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("dual") / "run"
    args = ["embed", "--scheme", "dual", "--owner", "alice", "--signing-key", str(keys)]
    result = runner.invoke(app, [*args, *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_keygen_makes_a_private_folder_and_never_replaces_a_key(keys: Path) -> None:
    assert stat.S_IMODE(keys.stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / PRIVATE_PEM).stat().st_mode) == 0o600
    again = runner.invoke(app, ["keygen", "--out", str(keys), "--bits", "2048"])
    assert again.exit_code == 2 and "refusing to replace a private key" in again.output


def test_keygen_encrypts_with_the_environments_passphrase(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(PASSPHRASE_ENV, "correct horse")
    folder = tmp_path / "locked"
    result = runner.invoke(app, ["keygen", "--out", str(folder), "--bits", "2048", "--encrypt"])
    assert result.exit_code == 0 and "encrypted" in result.output
    with pytest.raises(TypeError):  # no passphrase: cryptography refuses to open it
        serialization.load_pem_private_key((folder / PRIVATE_PEM).read_bytes(), None)
    monkeypatch.delenv(PASSPHRASE_ENV)
    out = tmp_path / "run"
    args = ["embed", "--scheme", "dual", "--owner", "a", "--signing-key", str(folder), *TINY]
    refused = runner.invoke(app, [*args, "--out", str(out)])
    assert refused.exit_code == 2 and f"set {PASSPHRASE_ENV}" in refused.output
    assert not out.exists()


def test_a_dual_run_holds_its_claim_and_never_the_private_key(
    keys: Path, dual_run: tuple[Path, str]
) -> None:
    out, output = dual_run
    claim = json.loads((out / "claim.json").read_text())
    assert claim["verifier"].startswith("alice|") and "BEGIN PUBLIC KEY" in claim["public_key"]
    assert stat.S_IMODE((out / "claim.json").stat().st_mode) == 0o600
    private = serialization.load_pem_private_key((keys / PRIVATE_PEM).read_bytes(), None)
    numbers = private.private_numbers()  # type: ignore[union-attr]
    secrets = [str(numbers.d), format(numbers.d, "x"), str(numbers.p)]
    body = (keys / PRIVATE_PEM).read_text().splitlines()[1:-1]
    secrets += [line for line in body if len(line) > 40]
    der = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    secrets.append(base64.b64encode(der[-64:]).decode())
    files = [p for p in out.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"claim.json", "events.jsonl", "model.safetensors"}
    for path in files:
        text = path.read_bytes().decode("latin-1")
        for secret in secrets:
            assert secret not in text, f"private key material in {path}"
    for secret in secrets:
        assert secret not in output


def test_verify_with_the_claim_reports_null_true_and_signature(dual_run) -> None:
    out, _ = dual_run
    result = runner.invoke(
        app, ["verify", "--run", str(out), "--claim", str(out / "claim.json"), "--json"]
    )
    assert result.exit_code in (0, 1), result.output
    row = json.loads(result.output.strip().splitlines()[-1])
    assert row["signature_valid"] is True
    assert {"null_acc", "true_acc", "p_value", "verified"} <= set(row)
    expected = row["null_acc"] >= 0.5 and row["true_acc"] >= 0.5 and row["p_value"] < 1e-3
    assert row["verified"] == expected
    assert result.exit_code == (0 if expected else 1)


@pytest.mark.parametrize("change", ["verifier", "signature", "public_key"])
def test_a_tampered_claim_is_not_verified_and_says_why(
    dual_run, keys: Path, tmp_path: Path, change: str
) -> None:
    out, _ = dual_run
    claim = json.loads((out / "claim.json").read_text())
    if change == "verifier":
        claim["verifier"] = claim["verifier"].replace("alice", "mallory")
    elif change == "signature":
        raw = bytearray(base64.b64decode(claim["signature"]))
        raw[-1] ^= 0xFF
        claim["signature"] = base64.b64encode(bytes(raw)).decode()
    else:
        other = tmp_path / "other"
        runner.invoke(app, ["keygen", "--out", str(other), "--bits", "2048"])
        claim["public_key"] = (other / "public.pem").read_text()
    path = tmp_path / "claim.json"
    path.write_text(json.dumps(claim))
    result = runner.invoke(app, ["verify", "--run", str(out), "--claim", str(path)])
    assert result.exit_code == 1
    assert "NOT VERIFIED" in result.output and "signature NOT valid" in result.output
    assert "does not match" in result.output


def test_bad_dual_input_is_one_line_and_writes_nothing(dual_run, keys, tmp_path: Path) -> None:
    out, _ = dual_run
    target = tmp_path / "new"
    base = ["embed", "--scheme", "dual", "--signing-key", str(keys), *TINY, "--out", str(target)]
    cases = {
        "from": ([*base, "--owner", "a", "--from", str(out)], "can only be embedded while"),
        "owner": (base, "--owner is required"),
        "size": ([*base, "--owner", "a", "--size", "29"], "size"),
        "no key": (
            [
                "embed",
                "--scheme",
                "dual",
                "--owner",
                "a",
                "--signing-key",
                str(tmp_path / "x"),
                *TINY,
                "--out",
                str(target),
            ],
            "signing key not found",
        ),
    }
    for name, (args, message) in cases.items():
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (name, result.output)
        assert message in result.output, (name, result.output)
        assert "Traceback" not in result.output
        assert not target.exists(), name
    bad_claim = tmp_path / "bad.json"
    bad_claim.write_text('{"verifier": "a"}')
    result = runner.invoke(app, ["verify", "--run", str(out), "--claim", str(bad_claim)])
    assert result.exit_code == 2 and "lacks" in result.output
    both = runner.invoke(
        app, ["verify", "--run", str(out), "--claim", str(bad_claim), "--key", str(out / "key")]
    )
    assert both.exit_code == 2 and "not both" in both.output


def test_t_and_l_say_dual_cannot_switch() -> None:
    from engine.errors import ConfigError
    from engine.watermarks import get_scheme

    with pytest.raises(ConfigError, match="cannot be switched mid-run"):
        get_scheme("dual").switch(None, None, trigger="next")  # type: ignore[arg-type]
