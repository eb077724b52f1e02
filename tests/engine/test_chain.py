"""Stacked attacks: one refereed attack job running removal attacks in order on the owner's
watermarked model (the session's ``pattern_run``, with its real key): every step scored
before and after, the budget accounted across the chain, a stop mid-way, a scenario phase."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

import pytest

from engine import commands as cmd
from engine.attacks import ATTACKS
from engine.attacks.budget import AttackerBudget
from engine.attacks.registry import REMOVAL
from engine.errors import ConfigError
from engine.events import Phase
from engine.jobs import JobSpec, run, start
from engine.jobs.chain import chain_cost, check_steps
from engine.runs import load_model
from engine.session import Session
from engine.studies.chains import chain_names, load_chain
from engine.studies.scenario_runner import prepare_scenario
from engine.studies.scenarios import scenario_from_mapping

CHAIN = ["prune", {"attack": "ft-basic", "params": {"lr": 0.01, "batch": 32}}, "fine-prune"]


def chain_spec(run_dir: Path, out: Path | None, chain: Any = CHAIN, **values: Any) -> JobSpec:
    budget = {"data_fraction": 0.5, "steps": 4, **values.pop("budget", {})}
    return JobSpec.attack("", run=run_dir, chain=chain, out=out, device="cpu", **budget, **values)


@pytest.fixture(scope="module")
def chained(pattern_run: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list]:
    events: list[Any] = []
    out = tmp_path_factory.mktemp("chain") / "out"
    result = run(chain_spec(pattern_run, out), events.append)
    return result, events


def test_the_referee_records_every_step_in_order(chained) -> None:
    result, events = chained
    summary = result.summary
    assert result.status == "completed"
    rows = summary["chain"]
    assert [r["phase"] for r in rows] == ["1:prune", "2:ft-basic", "3:fine-prune"]
    # each step starts from what the last one left, the first from the suspect
    assert rows[0]["before"] == summary["before"]
    for earlier, later in itertools.pairwise(rows):
        assert later["before"] == earlier["after"]
    # the chain's own numbers are the last step's, as any attack summary's are
    assert summary["after"] == rows[-1]["after"]
    assert summary["test_acc"] == rows[-1]["test_acc"]
    assert summary["retention"] == rows[-1]["retention"]
    for row in rows:
        assert {"test_acc", "retention", "steps", "info", "cost", "removed"} <= set(row)
        assert row["kept_accuracy"] == row["test_acc"]
        assert row["wm_accuracy"] == row["retention"]["key"]
    # the owner's key was there before; pruning half the weights then fine-tuning changed it
    assert summary["before"]["retention"]["key"] > 0.85
    assert rows[0]["info"]["sparsity"] > 0.4
    # one phase per step, started and ended in order, and no phase around them
    phases = [(e.name, e.status) for e in events if isinstance(e, Phase)]
    assert phases == [(r["phase"], s) for r in rows for s in ("start", "end")]


def test_the_saved_model_is_the_last_steps(chained) -> None:
    result, _ = chained
    from engine.data import load_dataset
    from engine.jobs.referee import default_probes, referee_scores

    manifest = json.loads((result.path / "manifest.json").read_text())
    assert [s["attack"] for s in manifest["attack"]["chain"]] == ["prune", "ft-basic", "fine-prune"]
    assert manifest["attack"]["chain"][1]["params"]["lr"] == 0.01
    config = manifest["config"]
    data = load_dataset(
        "synthetic",
        config["data_dir"] or None,
        train_size=config["train_size"],
        test_size=config["test_size"],
    ).data
    model, _ = load_model(result.path, "cpu")
    probes = default_probes(result.path)(data, model_device(model))
    assert referee_scores(model, probes) == result.summary["after"]


def model_device(model: Any) -> Any:
    return next(model.parameters()).device


def test_the_budget_is_accounted_across_the_chain(chained) -> None:
    result, _ = chained
    summary, rows = result.summary, result.summary["chain"]
    # the budget's steps apply to every training step; pruning alone trains none
    assert [r["steps"] for r in rows] == [0, 4, 4]
    assert summary["steps"] == sum(r["steps"] for r in rows)
    costs = [r["cost"] for r in rows]
    assert costs[0]["images"] == 0  # magnitude pruning reads no data
    assert costs[1]["images"] == costs[1]["labels"] == summary["labeled_images"]
    total = summary["cost"]
    assert total == chain_cost(rows)
    assert total["seconds"] == pytest.approx(sum(c["seconds"] for c in costs), abs=0.02)
    # the steps share one attacker's images: counted once, not once per step
    assert total["images"] == max(c["images"] for c in costs) == summary["labeled_images"]
    assert total["queries"] == sum(c["queries"] for c in costs)


def test_a_chain_stopped_mid_way_keeps_the_steps_it_finished(pattern_run, tmp_path) -> None:
    out = tmp_path / "stopped"
    running = start(chain_spec(pattern_run, out, ["prune", "ft-basic"], budget={"steps": 100000}))
    for event in running.events():
        if isinstance(event, Phase) and event.name == "2:ft-basic":
            running.send(cmd.Stop())
    result = running.result()
    assert result.status == "stopped"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert [r["phase"] for r in summary["chain"]] == ["1:prune"]
    assert summary["chain"][0]["after"]["test_acc"] is not None


@pytest.mark.parametrize(
    ("chain", "message"),
    [
        (["ft-basic"], "at least two attacks"),
        (
            ["prune", "ft-basci"],
            "chain step 2 (ft-basci): unknown attack 'ft-basci' (did you mean 'ft-basic'?)",
        ),
        (["prune", "gan"], "chain step 2 (gan): 'gan' is a detector"),
        (["prune", {"attack": "prune", "params": {"ratio": 2}}], "chain step 2 (prune)"),
        (["prune", {"name": "prune"}], "chain step 2: give an attack name"),
    ],
)
def test_a_bad_chain_is_refused_before_anything_is_written(
    pattern_run, tmp_path, chain, message
) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        chain_spec(pattern_run, tmp_path / "out", chain).validate()
    assert not (tmp_path / "out").exists()


def test_a_chain_takes_no_sweep_and_no_chain_wide_params(pattern_run, tmp_path) -> None:
    with pytest.raises(ConfigError, match="a chain takes none"):
        chain_spec(pattern_run, None, sweep=[0.1, 0.2]).validate()
    with pytest.raises(ConfigError, match="go with each step"):
        chain_spec(pattern_run, None, lr=0.1).validate()


def test_every_preset_chain_names_registered_removal_attacks() -> None:
    assert {f"sok-combined-{i}" for i in (1, 2, 3, 4)} <= set(chain_names())
    for name in chain_names():
        preset = load_chain(name)
        assert preset.source.startswith("WRT configs/"), name
        assert len(preset.steps) >= 2, name
        for step in preset.steps:
            assert step["attack"] in ATTACKS.names(REMOVAL), (name, step["attack"])
        # every step's params parse as the job will parse them
        steps = check_steps(preset.steps, AttackerBudget())
        assert [s.name for s in steps] == [s["attack"] for s in preset.steps]
    fine_prune = check_steps(load_chain("sok-combined-2").steps, AttackerBudget())[1]
    assert fine_prune.attack.params.ratio == 0.96  # WRT combined_attack2.yaml


def test_a_scenario_phase_runs_a_chain(tmp_path) -> None:
    raw = {
        "train": {
            "dataset": "synthetic",
            "train_size": 512,
            "test_size": 128,
            "epochs": 1,
            "eval_every": 4,
            "device": "cpu",
        },
        "phases": [
            {"name": "owner", "kind": "train"},
            {
                "kind": "attack",
                "chain": ["prune", {"attack": "ft-basic", "params": {"batch": 32}}],
                "budget": {"data_fraction": 0.5, "steps": 3},
            },
        ],
    }
    scenario = scenario_from_mapping(raw, name="tiny")
    assert scenario.phases[1].name == "chain"
    assert scenario.phases[1].label() == "chain (attack prune,ft-basic)"
    job, root, sinks = prepare_scenario(scenario, scenario.config(), tmp_path / "sc")
    session = Session(job, [root.event_sink(), *sinks]).start()
    for _ in session.events():
        pass
    assert session.status == "completed"
    summary = json.loads((tmp_path / "sc" / "02-chain" / "summary.json").read_text())
    assert [r["phase"] for r in summary["chain"]] == ["1:prune", "2:ft-basic"]
    assert summary["steps"] == 3
    assert (tmp_path / "sc" / "02-chain" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    ("phase", "message"),
    [
        ({"chain": ["prune"]}, "at least two attacks"),
        ({"chain": "sok-combined-9"}, "unknown chain 'sok-combined-9'"),
        ({"chain": ["prune", "ft-basic"], "attack": "prune"}, "not both"),
        ({"chain": ["prune", "ft-basic"], "sweep": [0.1]}, "takes no 'sweep'"),
        ({"chain": ["prune", "ft-basic"], "params": {"lr": 0.1}}, "go with each step"),
    ],
)
def test_a_bad_chain_phase_is_refused_when_the_file_is_read(phase, message) -> None:
    raw = {"phases": [{"name": "owner", "kind": "train"}, {"kind": "attack", **phase}]}
    with pytest.raises(ConfigError, match=message):
        scenario_from_mapping(raw, name="tiny")


def test_a_scenario_chain_phase_takes_a_preset() -> None:
    raw = {
        "phases": [
            {"name": "owner", "kind": "train"},
            {"kind": "attack", "chain": "sok-combined-4"},
        ]
    }
    if "adversarial-training" not in ATTACKS:
        pytest.skip("adversarial-training is not registered in this build")
    phase = scenario_from_mapping(raw, name="tiny").phases[1]
    assert phase.name == "sok-combined-4"
    assert [s["attack"] for s in phase.chain] == ["adversarial-training", "finetune"]


def test_a_recipe_arm_runs_a_chain_over_its_grid(tmp_path) -> None:
    """A recipe's phases are scenario phases: a chain's step params take the grid's values,
    and a cell reads a step's number from the chain's rows."""
    from engine.studies.recipe_file import recipe_from_mapping
    from engine.studies.recipes import plan

    raw = {
        "title": "t",
        "paper": "p",
        "source": "s",
        "train": {"dataset": "synthetic", "train_size": 512, "test_size": 128, "epochs": 1},
        "scales": {"quick": {"minutes": 1, "phases": {"a.stack": {"budget": {"steps": 2}}}}},
        "arms": [
            {
                "name": "a",
                "grid": {"ratio": [0.3, 0.6]},
                "phases": [
                    {"name": "owner", "kind": "train"},
                    {
                        "name": "stack",
                        "kind": "attack",
                        "chain": [
                            "prune",
                            {"attack": "fine-prune", "params": {"ratio": "{ratio}"}},
                        ],
                    },
                ],
            }
        ],
        "cells": [{"name": "kept", "phase": "stack", "metric": "chain.1.test_acc"}],
    }
    recipe = recipe_from_mapping(raw, "chained")
    trials = plan(recipe, "quick", tmp_path / "r").trials
    phases = [t.scenario.phases[1] for t in trials]
    assert [p.chain[1]["params"]["ratio"] for p in phases] == [0.3, 0.6]
    assert all(p.budget == {"steps": 2} for p in phases)
    ratios = [p.parsed_params()[1].attack.params.ratio for p in phases]
    assert ratios == [0.3, 0.6]


def test_a_sweep_axis_chooses_the_chain() -> None:
    from engine.studies.sweeps import grid_from_mapping

    raw = {
        "train": {"dataset": "synthetic", "train_size": 512, "test_size": 128, "epochs": 1},
        "phases": [
            {"name": "owner", "kind": "train"},
            {"name": "stack", "kind": "attack", "chain": "{chain}", "budget": {"steps": 2}},
        ],
        "axes": {"chain": ["sok-combined-4", "prune,ft-basic"]},
    }
    trials = grid_from_mapping(raw, "g").trials
    chains = [
        [s if isinstance(s, str) else s["attack"] for s in t.scenario.phases[1].chain]
        for t in trials
    ]
    assert chains == [["adversarial-training", "finetune"], ["prune", "ft-basic"]]
