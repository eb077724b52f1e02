"""The ``detectors`` recipe and the ``gan`` recipe's arms: what each scale plans (read from the
files, never run on real data here), a scale leaving a phase out, and a synthetic miniature
of the detectors recipe run end to end."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import engine.attacks  # noqa: F401  (registers the detectors)
from engine.attacks.registry import ATTACKS
from engine.errors import ConfigError
from engine.session import Session
from engine.studies import presets
from engine.studies.grid import matches
from engine.studies.recipe_file import load_recipe, recipe_from_mapping
from engine.studies.recipes import RESULT_FILE, RecipeRun, Trial, plan, prepare_recipe
from engine.watermarks.pattern import PatternParams
from wmtui.cli.main import app

DETECTORS = ("neural-cleanse", "gan", "tabor", "abs")
OUR_BUDGET = 300


def default_steps(method: str) -> int:
    """A detector's own cap: what "its paper's budget" means in the recipe."""
    params = ATTACKS.get(method).params
    assert params is not None
    return {f.name: f.default for f in dataclasses.fields(params)}["scan_steps"]


def scans(trial: Trial) -> list[tuple[str, int]]:
    """(method, cap) of every scan phase of a trial, checking each scans the model trained
    in the trial's first phase, without removal, with 10% of the data."""
    first = trial.scenario.phases[0]
    found = []
    for phase in trial.scenario.phases[1:]:
        assert phase.kind == "detect" and phase.on == first.name, phase
        params = phase.parsed_params()
        assert params.remove is False
        assert phase.parsed_budget().data_fraction == pytest.approx(0.1)
        found.append((phase.plugin, params.scan_steps))
    return found


def planned(name: str, scale: str, tmp_path: Path) -> RecipeRun:
    return plan(load_recipe(name), scale, tmp_path / f"{name}-{scale}")


# -- detectors: what each scale plans -------------------------------------------------------
def test_quick_is_the_issues_case_against_clean_models(tmp_path: Path) -> None:
    run = planned("detectors", "quick", tmp_path)
    marked = [t for t in run.trials if t.arm == "marked"]
    clean = [t for t in run.trials if t.arm == "clean"]
    assert len(marked) == 6 and len(clean) == 2
    default_decoys = PatternParams().decoy_ratio
    assert {t.point["decoys"] for t in marked} == {0.0, default_decoys}
    for trial in marked:
        embed = trial.scenario.phases[0].parsed_params()
        assert (embed.trigger, embed.position, embed.target_label) == ("square", "bl", 8)
        assert embed.decoy_ratio == trial.point["decoys"]
        assert trial.config.dataset == "fashion-mnist"
    assert sorted(t.point["seed"] for t in marked) == [0, 0, 1, 1, 2, 2]
    # neural-cleanse and gan at both budgets; tabor and abs at their papers' only
    wanted = {(m, default_steps(m)) for m in DETECTORS}
    wanted |= {("neural-cleanse", OUR_BUDGET), ("gan", OUR_BUDGET)}
    for trial in run.trials:
        assert set(scans(trial)) == wanted and len(scans(trial)) == len(wanted)


def test_standard_is_the_whole_grid_at_both_budgets(tmp_path: Path) -> None:
    run = planned("detectors", "standard", tmp_path)
    marked = [t for t in run.trials if t.arm == "marked"]
    axes = {k: {t.point[k] for t in marked} for k in marked[0].point}
    assert axes["trigger"] == {"text", "square", "noise"}
    assert axes["corner"] == {"bl", "br", "tl", "tr"}
    assert len(axes["target"]) == 4 and 8 in axes["target"] and len(axes["seed"]) == 3
    assert axes["decoys"] == {0.0, 0.05, 0.1, 0.2} and PatternParams().decoy_ratio in axes["decoys"]
    assert len(marked) == 3 * 4 * 4 * 3 * 4
    assert len([t for t in run.trials if t.arm == "clean"]) >= 10
    both = {(m, steps) for m in DETECTORS for steps in (default_steps(m), OUR_BUDGET)}
    for trial in run.trials[:: len(run.trials) // 7]:  # a spread of trials, both arms
        assert set(scans(trial)) == both


def test_every_scan_has_its_detection_clean_and_cost_cells() -> None:
    recipe = load_recipe("detectors")
    scan_phases = [p["name"] for p in recipe.arm("marked").phases[1:]]
    assert scan_phases == [p["name"] for p in recipe.arm("clean").phases[1:]]
    for phase in scan_phases:
        cells = [c for c in recipe.cells if c.phase == phase]
        flagged = [c for c in cells if c.arm == "marked" and c.measure == "equals"]
        assert all(c.equals == "{target}" and c.metric == "flagged_class" for c in flagged)
        assert {c.where.get("decoys") for c in flagged} >= {0.0, 0.05, 0.1, 0.2}
        assert [c.equals for c in cells if c.arm == "clean"] == ["none"]
        assert any(c.metric == "seconds" for c in cells)
    assert not any(c.expect for c in recipe.cells)  # nothing measured yet: no expected number
    gan_paper = [c for c in recipe.cells if c.phase == "gan-paper" and c.where == {"decoys": 0.0}]
    assert [c.paper for c in gan_paper] == [100.0]  # Table II: every target flagged


# -- gan: the paper's configuration and the decoy arm ------------------------------------------
def test_gan_recipe_main_arm_is_the_papers_no_decoys_and_the_decoy_arm_keeps_the_numbers(
    tmp_path: Path,
) -> None:
    recipe = load_recipe("gan")
    run = planned("gan", "quick", tmp_path)
    by_arm: dict[str, list[Trial]] = {}
    for trial in run.trials:
        by_arm.setdefault(trial.arm, []).append(trial)
    assert {a: len(t) for a, t in by_arm.items()} == {"marked": 12, "decoys": 12, "clean": 5}
    for arm, ratio in (("marked", 0.0), ("decoys", PatternParams().decoy_ratio)):
        points = [t.point for t in by_arm[arm]]
        assert points == [t.point for t in by_arm["marked"]]  # the same draws in both arms
        for trial in by_arm[arm]:
            assert trial.scenario.phases[0].parsed_params().decoy_ratio == ratio
    assert ratio > 0
    assert not any(c.expect for c in recipe.cells if c.arm == "marked")
    decoy_cells = [c for c in recipe.cells if c.arm == "decoys"]
    assert decoy_cells and all(c.expect.get("quick") for c in decoy_cells)


def test_gan_no_run_prints_both_arms_without_running(tmp_path: Path) -> None:
    out = tmp_path / "gan"
    result = CliRunner().invoke(app, ["reproduce", "gan", "--no-run", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "decoys: all targets: the target is flagged" in result.output
    assert "all targets: the target is flagged" in result.output.replace("decoys: all", "")
    assert not (out / "trials").exists()


def test_detectors_quick_no_run_prints_the_table_without_running(tmp_path: Path) -> None:
    out = tmp_path / "det"
    args = ["reproduce", "detectors", "--scale", "quick", "--no-run", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "GAN scan, paper's budget, no decoys: the target is flagged" in result.output
    assert "TABOR, paper's budget, clean models: nothing flagged" in result.output
    assert not (out / "trials").exists()
    saved = json.loads((out / RESULT_FILE).read_text())
    assert saved["complete"] is False and len(saved["trials"]) == 8


# -- a scale may leave a phase out ------------------------------------------------------------
def raw_detectors() -> dict[str, Any]:
    return presets.resolve("recipe", "detectors").read()


def test_a_skipped_phase_is_checked_and_left_out_of_that_scale_only(tmp_path: Path) -> None:
    raw = raw_detectors()
    skips = raw["scales"]["quick"]["phases"]
    assert skips["marked.tabor-ours"] == {"skip": True}
    bad = copy.deepcopy(raw)
    bad["scales"]["quick"]["phases"]["marked.tabor-ours"] = {"skip": "yes"}
    with pytest.raises(ConfigError, match="skip must be true or false"):
        recipe_from_mapping(bad, "bad")
    bad = copy.deepcopy(raw)
    bad["scales"]["quick"]["phases"]["marked.embed"] = {"skip": True}  # the scans need it
    with pytest.raises(ConfigError, match="marked at scale quick"):
        recipe_from_mapping(bad, "bad")


# -- a synthetic miniature, end to end ------------------------------------------------------
TINY_SCAN = {"scan_steps": 4, "batch": 8, "images": 120, "val_images": 40}


def tiny_detectors() -> dict[str, Any]:
    """The real file's arms, phases and cells on a synthetic dataset, one model per arm, each
    scan capped at a few steps: what runs, what each phase writes and how cells read it."""
    raw = raw_detectors()
    raw.pop("regression")  # the real run's records: other trials, not this miniature's
    raw["train"] = {
        "dataset": "synthetic",
        "train_size": 256,
        "test_size": 128,
        "epochs": 1,
        "optimizer": "adam",
        "lr": 0.003,
        "device": "cpu",
    }
    quick = raw["scales"]["quick"]
    quick["grid"] = {
        "marked": {
            "seed": [0],
            "trigger": ["square"],
            "corner": ["bl"],
            "target": [3],
            "decoys": [0.0],
        },
        "clean": {"seed": [0]},
    }
    for arm in raw["arms"]:
        for phase in arm["phases"][1:]:
            key = f"{arm['name']}.{phase['name']}"
            if key not in quick["phases"]:
                quick["phases"][key] = {"params": TINY_SCAN, "budget": {"data_fraction": 1.0}}
    return raw


def test_a_synthetic_miniature_runs_every_scan_and_fills_the_cells(tmp_path: Path) -> None:
    recipe = recipe_from_mapping(tiny_detectors(), "tiny-detectors")
    out = tmp_path / "run"
    job, root, sinks = prepare_recipe(plan(recipe, "quick", out))
    session = Session(job, [root.event_sink(), *sinks]).start()
    for _ in session.events():
        pass
    session.join()
    assert session.status == "completed", session.error
    result = json.loads((out / RESULT_FILE).read_text())
    assert result["complete"] is True
    run = plan(recipe, "quick", out)
    for cell, got in zip(recipe.cells, result["cells"], strict=True):
        (trial,) = [t for t in run.trials if t.arm == cell.arm]
        skipped = recipe.scales["quick"].phases.get(f"{cell.arm}.{cell.phase}", {}).get("skip")
        covered = not skipped and matches(trial.point, cell.where)
        assert got["n"] == int(covered) and got["ok"] is not False, cell.name
        if not covered:
            continue
        if cell.metric == "seconds":
            assert got["mean"] > 0
        elif cell.metric == "steps":
            assert 1 <= got["mean"] <= TINY_SCAN["scan_steps"]
        else:
            assert got["mean"] in (0.0, 100.0), cell.name  # flagged or not: one model
    # every scan ran on the trial's own model, capped where the scale said
    summaries = sorted((out / "trials").glob("marked-*/*/summary.json"))
    methods = []
    for path in summaries:
        summary = json.loads(path.read_text())
        if "method" in summary:
            methods.append(summary["method"])
            assert summary["params"]["scan_steps"] == TINY_SCAN["scan_steps"]
            assert "flagged_class" in summary and summary["status"] == "completed"
    assert sorted(methods) == sorted(["neural-cleanse", "gan", *DETECTORS])
