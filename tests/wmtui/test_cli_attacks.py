"""``wmtui attack`` end to end: a crude stamp watermark trained here, its key served to the
referee through a stand-in for ``engine.jobs.referee.load_key_probes``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from engine.config import TrainConfig
from engine.data import load_dataset
from engine.metrics import Probe, accuracy
from engine.models import Architecture, build_model
from engine.runs import RunDir
from engine.session import JobContext
from engine.training import OptimSettings, Source, TrainLoop
from wmtui.cli import app
from wmtui.cli import attacks as cli_attacks

cli_attacks.register(app)
runner = CliRunner()
TARGET, TRAIN, TEST = 0, 1024, 256


def stamp(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[:, :, -6:-1, -6:-1] = 1.0
    return x


def key_probe(data) -> Probe:
    others = data.test_y != TARGET
    return Probe("wm", data.test_x[others], torch.full((int(others.sum()),), TARGET), stamp)


@pytest.fixture(scope="module")
def wm_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    data = load_dataset("synthetic", shared_data_dir, train_size=TRAIN, test_size=TEST).data
    arch = Architecture("lenet5", data.shape, data.num_classes)
    torch.manual_seed(0)
    model = build_model(arch)
    key = Source("key", data.train_x[:64], 16, y=torch.full((64,), TARGET), transform=stamp)
    TrainLoop(
        model,
        [Source("owner", data.train_x, 64, y=data.train_y), key],
        OptimSettings(optimizer="adam", lr=0.003, schedule="cosine"),
        ctx=JobContext(),
        phase="train",
        total_steps=200,
        eval_every=10**6,
    ).run()
    assert accuracy(model, key_probe(data)) > 0.95
    config = TrainConfig(dataset="synthetic", train_size=TRAIN, test_size=TEST)
    run = RunDir.create(
        tmp_path_factory.mktemp("cli-wm") / "run",
        {"command": "train", "config": config.to_dict(), "seed": 0},
    )
    run.save_model(model, arch)
    (run.path / "key").mkdir()
    return run.path


@pytest.fixture(autouse=True)
def schemes_stand_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the schemes work will provide: the owner's key probes, from RUN/key."""
    from engine.jobs import referee

    monkeypatch.setattr(referee, "load_key_probes", lambda run_dir, data, device: [key_probe(data)])


def invoke(*args: str):
    return runner.invoke(app, ["attack", *args])


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_register_is_idempotent() -> None:
    cli_attacks.register(app)
    assert [c.name for c in app.registered_commands].count("attack") == 1


def test_ft_basic_json_writes_a_run_with_before_and_after(wm_run, tmp_path) -> None:
    out = tmp_path / "attacked"
    result = invoke(
        "--attack",
        "ft-basic",
        "--run",
        str(wm_run),
        "--data-fraction",
        "0.5",
        "--steps",
        "150",
        "--eval-every",
        "50",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--json",
    )
    assert result.exit_code == 0, result.output
    events = json_lines(result.stdout)
    done = events[-1]
    assert done["event"] == "done" and done["status"] == "completed"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["before"]["retention"]["wm"] > 0.95 > 0.5 > summary["after"]["retention"]["wm"]
    assert done["summary"]["after"] == summary["after"]
    metrics = [e for e in events if e["event"] == "metrics" and e["test_acc"] is not None]
    steps = [m["step"] for m in metrics]  # every --eval-every steps and every epoch end
    assert {50, 100, 150} <= set(steps) and steps[-1] == 150
    assert all("wm" in m["retention"] for m in metrics)
    assert (out / "model.safetensors").is_file() and (out / "events.jsonl").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["attack"]["name"] == "ft-basic"
    assert manifest["attack"]["params"]["lr"] == 0.05
    assert manifest["attack"]["budget"]["data_fraction"] == 0.5


def test_human_mode_prints_the_before_after_table(wm_run, tmp_path) -> None:
    result = invoke(
        "--attack",
        "finetune",
        "--mode",
        "ftll",
        "--lr=0.01",
        "--run",
        str(wm_run),
        "--steps",
        "5",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "a"),
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["test", "acc", "wm"]
    assert lines[1].startswith("before") and lines[2].startswith("after")
    assert "== finetune" in result.stderr
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["attack"]["params"]["mode"] == "ftll"
    assert manifest["attack"]["params"]["lr"] == 0.01


def test_prune_sweep_table_and_json_rows(wm_run, tmp_path) -> None:
    args = ["--attack", "prune", "--run", str(wm_run), "--sweep", "0,0.5,0.95"]
    result = invoke(*args, "--out", str(tmp_path / "s1"))
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert table[0].split()[:4] == ["ratio", "pruned", "sparsity", "test"] and len(table) == 4
    result = invoke(*args, "--out", str(tmp_path / "s2"), "--json")
    rows = [e for e in json_lines(result.stdout) if e["event"] == "sweep_row"]
    assert [r["ratio"] for r in rows] == [0.0, 0.5, 0.95]
    assert [r["sparsity"] for r in rows] == sorted(r["sparsity"] for r in rows)
    assert all("wm" in r["retention"] for r in rows)


def test_list_shows_every_attack() -> None:
    result = invoke("--list")
    assert result.exit_code == 0
    names = {line.split()[0] for line in result.stdout.splitlines() if not line.startswith(" ")}
    assert names >= {"finetune", "ft-basic", "ftau", "prune", "fine-prune", "distill"}


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--attack", "ft-basci"], "did you mean 'ft-basic'"),
        (["--attack", "prune", "--ratio", "1.5"], "ratio: must be < 1"),
        (["--attack", "ft-basic", "--data-fraction", "1.5"], "data-fraction: must be <= 1"),
        (["--attack", "ft-basic", "--data-fraction", "-0.1"], "data-fraction: must be >= 0"),
        (["--attack", "ft-basic", "--mode", "ftll"], "--mode is not an option of attack"),
        (["--attack", "finetune", "--mdoe", "ftll"], "did you mean '--mode'"),
        (["--attack", "ft-basic", "--sweep", "0.1"], "needs an attack with a ratio"),
        (["--attack", "prune", "--sweep", "0.1,x"], "comma-separated numbers"),
        (["--attack", "ftau", "--data-fraction", "0"], "--unlabeled"),
        (["--attack", "ft-basic", "--lr"], "--lr needs a value"),
        (["--attack", "ft-basic", "--unlabeled", "synthetc"], "did you mean 'synthetic'"),
        (["--run", "RUN"], "--attack is required"),
    ],
)
def test_bad_input_is_one_line_exit_2(wm_run, tmp_path, args, fragment) -> None:
    args = [str(wm_run) if a == "RUN" else a for a in args]
    if "--run" not in args:
        args += ["--run", str(wm_run)]
    out = tmp_path / "never"
    result = invoke(*args, "--out", str(out))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error:"), result.stderr
    assert fragment in lines[0]
    assert not out.exists()  # nothing created for bad input


def test_missing_run_is_exit_2(tmp_path) -> None:
    result = invoke("--attack", "ft-basic", "--run", str(tmp_path / "nope"))
    assert result.exit_code == 2
    assert "run directory not found" in result.stderr and "Traceback" not in result.output


def test_attack_flags_never_shadow_budget_or_command_flags() -> None:
    import dataclasses

    from engine.attacks import ATTACKS, AttackerBudget

    taken = {f.name for f in dataclasses.fields(AttackerBudget)}
    taken |= {"attack", "run", "out", "json", "sweep", "device", "eval_every", "overwrite", "list"}
    for plugin in ATTACKS:
        assert not taken & {f.name for f in dataclasses.fields(plugin.params)}, plugin.name
