"""``wmtui attack`` end to end, against a run watermarked by the ``pattern`` scheme (the
session's ``pattern_run``): the referee loads the owner's real key from ``RUN/key``, so the
retention before and after is measured by it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wmtui.cli import app
from wmtui.cli import attacks as cli_attacks

cli_attacks.register(app)
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["attack", *args])


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_register_is_idempotent() -> None:
    cli_attacks.register(app)
    assert [c.name for c in app.registered_commands].count("attack") == 1


def test_ft_basic_json_writes_a_run_with_before_and_after(pattern_run, tmp_path) -> None:
    out = tmp_path / "attacked"
    result = invoke(
        "--attack",
        "ft-basic",
        "--run",
        str(pattern_run),
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
    embedded = json.loads((pattern_run / "summary.json").read_text())
    # the referee scored the owner's key on the unchanged model as the embedding did
    assert summary["before"]["retention"] == embedded["retention"]
    assert summary["before"]["retention"]["key"] > 0.85 > 0.5 > summary["after"]["retention"]["key"]
    assert done["summary"]["after"] == summary["after"]
    metrics = [e for e in events if e["event"] == "metrics" and e["test_acc"] is not None]
    steps = [m["step"] for m in metrics]  # every --eval-every steps and every epoch end
    assert {50, 100, 150} <= set(steps) and steps[-1] == 150
    assert all(set(m["retention"]) == {"key"} for m in metrics)
    assert (out / "model.safetensors").is_file() and (out / "events.jsonl").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["attack"]["name"] == "ft-basic"
    assert manifest["attack"]["params"]["lr"] == 0.05
    assert manifest["attack"]["budget"]["data_fraction"] == 0.5


def test_human_mode_prints_the_before_after_table(pattern_run, tmp_path) -> None:
    result = invoke(
        "--attack",
        "finetune",
        "--mode",
        "ftll",
        "--lr=0.01",
        "--run",
        str(pattern_run),
        "--steps",
        "5",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "a"),
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["test", "acc", "key"]
    assert lines[1].startswith("before") and lines[2].startswith("after")
    assert "== finetune" in result.stderr
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["attack"]["params"]["mode"] == "ftll"
    assert manifest["attack"]["params"]["lr"] == 0.01


def test_prune_sweep_table_and_json_rows(pattern_run, tmp_path) -> None:
    args = ["--attack", "prune", "--run", str(pattern_run), "--sweep", "0,0.5,0.95"]
    result = invoke(*args, "--out", str(tmp_path / "s1"))
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert table[0].split()[:4] == ["ratio", "pruned", "sparsity", "test"] and len(table) == 4
    result = invoke(*args, "--out", str(tmp_path / "s2"), "--json")
    rows = [e for e in json_lines(result.stdout) if e["event"] == "sweep_row"]
    assert [r["ratio"] for r in rows] == [0.0, 0.5, 0.95]
    assert [r["sparsity"] for r in rows] == sorted(r["sparsity"] for r in rows)
    assert all(set(r["retention"]) == {"key"} for r in rows)
    embedded = json.loads((pattern_run / "summary.json").read_text())
    assert rows[0]["retention"] == embedded["retention"]  # ratio 0: the owner's model as is


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
def test_bad_input_is_one_line_exit_2(pattern_run, tmp_path, args, fragment) -> None:
    args = [str(pattern_run) if a == "RUN" else a for a in args]
    if "--run" not in args:
        args += ["--run", str(pattern_run)]
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
