"""``wmtui attack`` with a chain: ``--attack a,b`` and a preset's name, per-step flags
``--STEP.FLAG``, and every bad chain refused in one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from wmtui.cli import app
from wmtui.cli import attacks as cli_attacks

cli_attacks.register(app)
runner = CliRunner()
BUDGET = ["--data-fraction", "0.5", "--steps", "3", "--device", "cpu"]


def invoke(*args: str):
    return runner.invoke(app, ["attack", *args])


def test_a_chain_runs_with_per_step_flags(pattern_run, tmp_path) -> None:
    out = tmp_path / "chained"
    result = invoke(
        "--attack",
        "prune,ft-basic,prune",
        "--ft-basic.lr",
        "0.01",
        "--2.batch=32",
        "--3.ratio",
        "0.3",
        "--run",
        str(pattern_run),
        *BUDGET,
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    steps = json.loads((out / "manifest.json").read_text())["attack"]["chain"]
    assert [s["attack"] for s in steps] == ["prune", "ft-basic", "prune"]
    assert (steps[1]["params"]["lr"], steps[1]["params"]["batch"]) == (0.01, 32)
    assert (steps[0]["params"]["ratio"], steps[2]["params"]["ratio"]) == (0.5, 0.3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["attack"] == "prune,ft-basic,prune"
    assert [r["steps"] for r in summary["chain"]] == [0, 3, 0]
    # one line per step, then the verdict, all within 80 columns
    for phase in ("1:prune", "2:ft-basic", "3:prune"):
        assert any(line.startswith(phase) for line in result.stdout.splitlines()), phase
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--attack", "prune,ft-basci"], "unknown attack 'ft-basci' (did you mean 'ft-basic'?)"),
        (["--attack", "prune,gan"], "chain step 2 (gan): 'gan' is a detector"),
        (["--attack", "prune,"], "a chain needs at least two attacks"),
        (["--attack", "sok-combined-9"], "(did you mean 'sok-combined-"),
        (["--attack", "prune,ft-basic", "--sweep", "0.1,0.2"], "a chain takes none"),
        (["--attack", "prune,ft-basic", "--lr", "0.1"], "say which step"),
        (["--attack", "prune,ft-basic", "--fine-prune.ratio", "0.9"], "no step 'fine-prune'"),
        (["--attack", "prune,ft-basic", "--3.lr", "0.1"], "the chain has no step 3"),
        (["--attack", "prune,ft-basic,prune", "--prune.ratio", "0.2"], "is steps 1 and 3"),
        (["--attack", "prune,ft-basic", "--2.nope", "1"], "chain step 2 (ft-basic): --nope"),
        (["--attack", "prune,ft-basic", "--prune.ratio", "2"], "chain step 1 (prune): ratio"),
        (["--attack", "prune,ft-basic", "--ft-basic.lr"], "--lr needs a value"),
    ],
)
def test_a_bad_chain_is_one_line_exit_2(pattern_run, tmp_path, args, fragment) -> None:
    out = tmp_path / "never"
    result = invoke(*args, "--run", str(pattern_run), *BUDGET, "--out", str(out))
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error:"), result.stderr
    assert fragment in lines[0]
    assert not out.exists()  # nothing created for bad input


def test_the_list_ends_with_the_preset_chains() -> None:
    from engine.studies.chains import chain_names

    lines = invoke("--list").stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("CHAINS:"))
    assert [line.split()[0] for line in lines[header + 1 :]] == chain_names()
    assert "fine-prune(ratio=0.96)" in "\n".join(lines[header:])
    assert max(len(line) for line in lines) <= 80
    rows = [json.loads(line) for line in invoke("--list", "--json").stdout.splitlines()]
    chains = [row for row in rows if row["family"] == "chain"]
    assert [row["name"] for row in chains] == chain_names()
    assert all(len(row["steps"]) >= 2 for row in chains)


def test_the_playground_shows_each_step_as_a_phase(pattern_run) -> None:
    """The real chain job's events, folded as the playground does: one plot segment per
    step, none nested in another, and the loss of the training step on its own segment."""
    from engine.jobs import JobSpec, run
    from wmtui.tui.state import DashboardState

    events: list = []
    spec = JobSpec.attack(
        "",
        run=pattern_run,
        chain=["prune", "ft-basic"],
        data_fraction=0.5,
        steps=3,
        eval_every=1,
        device="cpu",
    )
    assert run(spec, on_event=events.append).status == "completed"
    state = DashboardState()
    for event in events:
        state.apply(event)
    lines = state.take_log()
    assert [line for line in lines if line.startswith("phase ")] == [
        "phase 1:prune started",
        "phase 1:prune ended",
        "phase 2:ft-basic started",
        "phase 2:ft-basic ended",
    ]
    # every step ends with its own verdict line, as a single attack's phase does
    assert len([line for line in lines if line.startswith("removed: ")]) == 2
    assert len(state.phase_starts) == 2 and state.outer == []
    assert state.phase == "2:ft-basic" and state.step == 3
