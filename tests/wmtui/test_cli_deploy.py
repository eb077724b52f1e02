"""Input-preprocessing attacks end to end: ``wmtui attack --attack jpeg`` writes a deployed run
that ``verify``, ``attack``, ``detect`` and ``report`` then take as a model, behind its
transforms; bad transform params are one line, exit 2, nothing written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.deploy import Deployed
from engine.runs import load_model
from wmtui.cli import app
from wmtui.cli import attacks as cli_attacks

cli_attacks.register(app)
runner = CliRunner()
CPU = ["--device", "cpu"]


def attack(run: Path, out: Path, *args: str):
    return runner.invoke(app, ["attack", "--run", str(run), "--out", str(out), *CPU, *args])


@pytest.fixture(scope="module")
def jpeg_run(pattern_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The pattern run served behind JPEG at quality 20 (cheap: nothing is trained)."""
    out = tmp_path_factory.mktemp("deployed") / "jpeg"
    result = attack(pattern_run, out, "--attack", "jpeg", "--quality", "20")
    assert result.exit_code == 0, result.output
    return out


def test_a_preprocessing_attack_writes_the_model_and_its_spec(
    pattern_run: Path, jpeg_run: Path
) -> None:
    spec = json.loads((jpeg_run / "deploy.json").read_text())
    assert spec["transforms"] == [{"name": "jpeg", "params": {"quality": 20}}]
    # the classifier is the suspect's, unchanged: only what it is asked changes
    original, _ = load_model(pattern_run)
    served, _ = load_model(jpeg_run)
    assert isinstance(served, Deployed)
    for a, b in zip(
        original.state_dict().values(), served.inner.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    summary = json.loads((jpeg_run / "summary.json").read_text())
    assert summary["steps"] == 0 and summary["info"]["deployed"] == spec["transforms"]
    assert summary["after"]["retention"]["key"] != summary["before"]["retention"]["key"]


def test_verify_queries_through_the_transforms(pattern_run: Path, jpeg_run: Path) -> None:
    result = runner.invoke(
        app, ["verify", "--run", str(jpeg_run), "--key", str(pattern_run / "key"), "--json", *CPU]
    )
    assert result.exit_code in (0, 1), result.output
    row = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")][-1]
    summary = json.loads((jpeg_run / "summary.json").read_text())
    assert row["retention"] == pytest.approx(summary["after"]["retention"]["key"])
    assert row["retention"] != pytest.approx(summary["before"]["retention"]["key"])


def test_preprocessing_attacks_compose_and_fine_tuning_trains_through_them(
    jpeg_run: Path, tmp_path: Path
) -> None:
    both = tmp_path / "both"
    result = attack(jpeg_run, both, "--attack", "median-smoothing", "--kernel", "3")
    assert result.exit_code == 0, result.output
    names = [t["name"] for t in json.loads((both / "deploy.json").read_text())["transforms"]]
    assert names == ["jpeg", "median-smoothing"]
    tuned = tmp_path / "tuned"
    result = attack(
        both, tuned, "--attack", "ft-basic", "--steps", "20", "--data-fraction", "0.5", "--json"
    )
    assert result.exit_code == 0, result.output
    before, _ = load_model(both)
    after, _ = load_model(tuned)
    assert isinstance(after, Deployed) and after.spec() == before.spec()
    changed = [
        not torch.equal(a, b)
        for a, b in zip(before.state_dict().values(), after.state_dict().values(), strict=True)
    ]
    assert all(changed[:2])  # the first convolution learnt through JPEG and the median


def test_detect_scans_the_deployed_model(jpeg_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "scan"
    fast = ["--scan-steps", "3", "--images", "60", "--val-images", "30", "--batch", "8"]
    args = ["--method", "neural-cleanse", "--run", str(jpeg_run), "--out", str(out), *fast]
    result = runner.invoke(app, ["detect", *args, "--data-fraction", "0.5", "--json", *CPU])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["perturbation_sizes"]) == 10


def test_the_report_names_the_transform_chain(jpeg_run: Path, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    result = runner.invoke(app, ["report", str(jpeg_run), "--out", str(page)])
    assert result.exit_code == 0, result.output
    assert "served behind" in page.read_text() and "jpeg(quality=20)" in page.read_text()


def test_input_reconstruction_trains_and_saves_its_autoencoder(
    pattern_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "recon"
    result = attack(
        pattern_run,
        out,
        "--attack",
        "input-reconstruction",
        "--filters",
        "4",
        "--steps",
        "30",
        "--eval-every",
        "15",
        "--json",
    )
    assert result.exit_code == 0, result.output
    assert (out / "deploy.safetensors").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["info"]["reconstruction_loss"] < 0.05
    served, _ = load_model(out)
    assert served.spec() == [
        {"name": "input-reconstruction", "params": {"filters": 4, "channels": 1}}
    ]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--attack", "gaussian-smoothing", "--sigma", "-0.5"], "sigma: must be >= 0"),
        (["--attack", "input-noising", "--sigma", "-1"], "sigma: must be >= 0"),
        (["--attack", "input-quantization", "--bits", "0"], "bits: must be >= 1"),
        (["--attack", "feature-squeezing", "--bits", "17"], "bits: must be <= 16"),
        (["--attack", "jpeg", "--quality", "0"], "quality: must be >= 1"),
        (["--attack", "jpeg", "--quality", "101"], "quality: must be <= 100"),
        (["--attack", "jpg"], "did you mean 'jpeg'"),
        (["--attack", "jpeg", "--sigma", "1"], "--sigma"),
        (["--attack", "input-reconstruction", "--data-fraction", "0"], "--data-fraction > 0"),
    ],
)
def test_bad_transform_input_is_one_line_exit_2(
    pattern_run: Path, tmp_path: Path, args: list[str], fragment: str
) -> None:
    out = tmp_path / "never"
    result = attack(pattern_run, out, *args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error:"), result.stderr
    assert fragment in lines[0]
    assert not out.exists()


def test_embedding_from_a_deployed_run_trains_its_classifier(
    jpeg_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "owner"
    args = ["--scheme", "pattern", "--from", str(jpeg_run), "--dataset", "synthetic"]
    sizes = ["--train-size", "256", "--test-size", "64", "--epochs", "1", "--json"]
    result = runner.invoke(app, ["embed", *args, *sizes, "--out", str(out), *CPU])
    assert result.exit_code == 0, result.output
    assert not (out / "deploy.json").exists()  # the owner's model is the classifier alone
    model, _ = load_model(out)
    assert not isinstance(model, Deployed)
    served, _ = load_model(jpeg_run)
    assert set(model.state_dict()) == set(served.inner.state_dict())
