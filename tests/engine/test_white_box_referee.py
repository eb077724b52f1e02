"""The referee reads a white-box watermark from the weights: attack summaries carry the owner's
bit error rate before and after, "removed" is decided on the scheme's verdict with the SoK's
accuracy rule, and the CLI shows the BER (one attack, a prune sweep, a chain, overwriting)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from engine.jobs import JobSpec, run
from engine.jobs.success import MARGIN
from engine.jobs.white_box_verdict import ALPHA, WhiteBoxJudge
from engine.watermarks import load_key
from wmtui.cli import app

runner = CliRunner()
TRAIN = dict(
    dataset="synthetic",
    train_size=1024,
    test_size=256,
    epochs=4,
    optimizer="adam",
    lr=0.01,
    device="cpu",
)
BUDGET = dict(data_fraction=0.25, device="cpu")


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A LeNet-5 with a ``uchida`` signature (strength 0.1: BER 0 within these few steps)."""
    out = tmp_path_factory.mktemp("wb") / "marked"
    spec = JobSpec.embed("uchida", strength=0.1, out=out, data_dir=str(shared_data_dir), **TRAIN)
    summary = run(spec).summary
    assert summary["verify"]["ber"] == 0, summary["verify"]
    return out


def read(scores: dict[str, Any]) -> dict[str, Any]:
    return scores["white_box"]["key"]


def obeys_the_rule(summary: dict[str, Any]) -> bool:
    """``removed`` as the module says: not verified, and within 5 points of the reference."""
    useful = summary["test_acc"] >= summary["reference_test_acc"] - MARGIN - 1e-12
    return summary["removed"] == (useful and summary["p_value"] >= ALPHA)


def test_feature_permutation_raises_the_ber_and_the_summary_says_removed(
    marked: Path, tmp_path: Path
) -> None:
    out = tmp_path / "permuted"
    summary = run(JobSpec.attack("feature-permutation", run=marked, out=out, **BUDGET)).summary
    before, after = read(summary["before"]), read(summary["after"])
    assert before["ber"] == 0 and before["verified"] and before["bits"] == 100
    assert after["ber"] > 0.25 and not after["verified"]  # towards coins: the bits reordered
    assert summary["ber"] == after["ber"] and summary["p_value"] == after["p_value"]
    assert summary["rule"] == "white-box" and summary["wm_accuracy"] == 1 - after["ber"]
    # the permutation leaves the outputs alone: useful, and the mark unread -> removed
    assert summary["test_acc"] == pytest.approx(summary["before"]["test_acc"])
    assert summary["removed"] is True and obeys_the_rule(summary)
    assert "BER" in summary["why"] and "before the attack" in summary["why"]
    # the CLI's before/after table and verdict lines carry the BER
    args = ["attack", "--attack", "feature-permutation", "--run", str(marked), "--device", "cpu"]
    again = runner.invoke(app, [*args, "--data-fraction", "0.25", "--out", str(tmp_path / "cli")])
    assert again.exit_code == 0, again.output
    assert "key BER" in again.output and "removed: yes" in again.output
    assert f"{after['ber']:.2f} of 100 bits" in again.output


def test_an_attack_that_changes_nothing_keeps_the_ber_at_zero(marked: Path) -> None:
    spec = JobSpec.attack("finetune", run=marked, steps=1, lr=1e-7, **BUDGET)
    summary = run(spec).summary
    assert read(summary["after"])["ber"] == 0 and summary["ber"] == 0
    assert summary["removed"] is False and obeys_the_rule(summary)
    given = run(
        JobSpec.attack("finetune", run=marked, steps=1, lr=1e-7, reference_acc=1.0, **BUDGET)
    )
    assert given.summary["reference_test_acc"] == 1.0  # the user's unmarked accuracy wins


def test_a_prune_sweep_reports_the_ber_per_ratio(marked: Path, tmp_path: Path) -> None:
    args = ["attack", "--attack", "prune", "--run", str(marked), "--device", "cpu"]
    args += ["--data-fraction", "0.25"]
    result = runner.invoke(
        app, [*args, "--sweep", "0,0.65,0.99", "--json", "--out", str(tmp_path / "json")]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if "sweep_row" in line]
    assert [row["ratio"] for row in rows] == [0, 0.65, 0.99]
    assert rows[0]["ber"] == 0 and rows[0]["bits"] == 100
    assert all(0 <= row["ber"] <= 1 and row["p_value"] is not None for row in rows)
    assert rows[-1]["ber"] >= rows[0]["ber"]  # 99% of the weights zeroed cannot read better
    table = runner.invoke(app, [*args, "--sweep", "0,0.65", "--out", str(tmp_path / "table")])
    assert table.exit_code == 0, table.output
    head = next(
        line for line in table.output.splitlines() if line.split()[:2] == ["ratio", "pruned"]
    )
    assert head.split()[-1] == "BER"


def test_a_chain_reports_the_ber_after_each_step(marked: Path) -> None:
    spec = JobSpec.attack("prune,feature-permutation", run=marked, **BUDGET)
    summary = run(spec).summary
    steps = summary["chain"]
    assert [s["attack"] for s in steps] == ["prune", "feature-permutation"]
    assert steps[1]["ber"] == summary["ber"] > 0.25
    assert read(steps[1]["before"]) == read(steps[0]["after"])


def test_overwriting_with_an_own_white_box_key_reports_the_owners_ber(
    marked: Path, tmp_path: Path
) -> None:
    out = tmp_path / "overwritten"
    spec = JobSpec.attack(
        "overwriting", run=marked, scheme="uchida", steps=120, lr=0.003, out=out, **BUDGET
    )
    summary = run(spec).summary
    assert summary["claims"][0]["verified"] and summary["claims"][0]["ber"] < 0.25  # its mark in
    owner, attacker = load_key(marked / "key"), load_key(out / "pirate-key")
    # its own key, not the owner's drawn again from the same seed
    assert not torch.equal(owner.tensors["projection"], attacker.tensors["projection"])
    owners = read(summary["after"])
    assert owners["ber"] == summary["ber"] and owners["bits"] == 100
    assert obeys_the_rule(summary)


def test_the_judge_needs_a_reading_and_an_unmarked_accuracy() -> None:
    scores = {"test_acc": 0.8, "white_box": {"key": {"ber": 0.5, "bits": 64, "p_value": 0.6}}}
    assert WhiteBoxJudge(None, "", MARGIN).judge(scores)["removed"] is None
    assert WhiteBoxJudge(0.9, "given", MARGIN).judge({"test_acc": 0.9})["removed"] is None
    far = WhiteBoxJudge(0.9, "given", MARGIN).judge(scores)  # 10 points lost: not a removal
    assert far["removed"] is False and "more than 5 points below" in far["why"]
    near = WhiteBoxJudge(0.84, "given", MARGIN).judge(scores)
    assert near["removed"] is True and near["wm_accuracy"] == 0.5


def test_a_detection_with_removal_reports_the_owners_ber_before_and_after(
    marked: Path, tmp_path: Path
) -> None:
    """Unlearning a reversed trigger changes weights too: detect reads the owner's BER around
    it, as an attack does (a short scan; whatever it flags, before and after are read)."""
    args = ["detect", "--method", "neural-cleanse", "--run", str(marked), "--device", "cpu"]
    scan = ["--remove", "true", "--scan-steps", "20", "--converge-window", "20"]
    out = tmp_path / "nc"
    result = runner.invoke(app, [*args, *scan, "--data-fraction", "0.25", "--out", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    before, after = read(summary["before"]), read(summary["after"])
    assert before["ber"] == 0 and before["bits"] == after["bits"] > 0
    assert 0 <= after["ber"] <= 1 and isinstance(after["verified"], bool)
    # the printed lines carry it too, beside the key accuracies
    assert f"BER 0.00 -> {after['ber']:.2f} of {after['bits']} bits" in result.output
