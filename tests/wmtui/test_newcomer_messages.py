"""Messages a newcomer reads: values as typed (no Python reprs), TOML errors that name keys,
suggestions from the right kind of plugin, a claim that is not JSON said plainly."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from engine.attacks import ATTACKS
from engine.errors import UserError
from engine.studies.scenarios import load_scenario
from engine.watermarks.claims import load_claim
from wmtui.cli import app

runner = CliRunner()


def test_attack_listing_shows_defaults_as_typed() -> None:
    out = runner.invoke(app, ["attack", "--list"]).output
    assert "(default: sgd)" in out and "'sgd'" not in out


def test_help_shows_booleans_as_typed() -> None:
    out = runner.invoke(app, ["embed", "--help"], terminal_width=200).output
    assert "(default: false)" in out and "(default: False)" not in out


def test_a_bad_number_is_echoed_as_typed() -> None:
    result = runner.invoke(app, ["train", "--dataset", "synthetic", "--epochs", "0"])
    assert result.exit_code == 2
    assert "got 0" in result.output and "'0'" not in result.output


def test_a_toml_typo_names_the_key_not_a_flag(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(
        "[[phases]]\nname = 'owner'\nkind = 'embed'\nscheme = 'pattern'\n"
        "params = { triger = 'square' }\n"
    )
    try:
        load_scenario(str(path))
    except UserError as exc:
        message = str(exc)
    else:
        raise AssertionError("the typo was accepted")
    assert "triger" in message and "--" not in message
    assert "trigger" in message.split("triger", 1)[1]  # the suggestion


def test_the_cli_still_names_a_foreign_flag_as_a_flag() -> None:
    result = runner.invoke(app, ["embed", "--dataset", "synthetic", "--count", "5"])
    assert result.exit_code == 2 and "--count does not apply" in result.output


def test_an_unknown_attack_suggests_removal_attacks_only() -> None:
    result = runner.invoke(app, ["attack", "--attack", "ft-basc", "--run", "nowhere"])
    assert result.exit_code == 2 and "ft-basic" in result.output
    detectors = [p.name for p in ATTACKS if p.role != "removal"]
    assert detectors and not any(name in result.output for name in detectors)


def test_a_claim_that_is_not_json_says_so(tmp_path: Path) -> None:
    claim = tmp_path / "claim.json"
    claim.write_text("not json")
    try:
        load_claim(claim)
    except UserError as exc:
        message = str(exc)
    else:
        raise AssertionError("a claim that is not JSON was accepted")
    assert message == f"claim {claim} is not JSON"
