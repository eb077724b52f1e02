"""Recipes without the CLI: grids, the file's checks, trials run as scenarios, the comparison
of each cell with its expected number, and resuming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigError, RunError
from engine.session import Session
from engine.studies.grid import expand, placeholders, substitute, trial_key
from engine.studies.recipe_file import load_recipe, recipe_from_mapping, recipe_names
from engine.studies.recipes import RESULT_FILE, TRIALS, lookup, plan, prepare_recipe

TINY_TRAIN = {
    "dataset": "synthetic",
    "train_size": 256,
    "test_size": 128,
    "epochs": 1,
    "optimizer": "adam",
    "lr": 0.003,
    "device": "cpu",
}


def tiny_recipe(**changes: Any) -> dict[str, Any]:
    """Two seeds x two targets of a pattern embedding and an FT-Basic attack: seconds."""
    raw: dict[str, Any] = {
        "title": "tiny",
        "paper": "Nobody et al.",
        "source": "Table 0",
        "train": dict(TINY_TRAIN),
        "scales": {"quick": {"minutes": 1}, "paper": {"minutes": 2, "train": {"epochs": 2}}},
        "arms": [
            {
                "name": "marked",
                "grid": {"seed": [0, 1], "target": [3, 5]},
                "phases": [
                    {
                        "name": "embed",
                        "kind": "embed",
                        "scheme": "pattern",
                        "params": {"trigger": "square", "target_label": "{target}"},
                    },
                    {
                        "name": "ftb",
                        "kind": "attack",
                        "attack": "ft-basic",
                        "budget": {"data_fraction": 0.5, "epochs": 1},
                    },
                ],
            }
        ],
        "cells": [
            {
                "name": "accuracy",
                "phase": "embed",
                "metric": "test_acc",
                "unit": "%",
                "paper": 90.0,
                "expect": {"quick": {"value": 50.0, "tolerance": 50.0, "reason": "any"}},
            },
            {
                "name": "target 3 retention after",
                "phase": "ftb",
                "metric": "retention.key",
                "where": {"target": 3},
                "unit": "%",
            },
            {
                "name": "accuracy change",
                "phase": "ftb",
                "metric": "test_acc",
                "base": "test_acc_before",
            },
        ],
    }
    raw.update(changes)
    return raw


def run_recipe(raw: dict[str, Any], out: Path, scale: str = "quick") -> dict[str, Any]:
    recipe = recipe_from_mapping(raw, "tiny")
    job, root, sinks = prepare_recipe(plan(recipe, scale, out))
    session = Session(job, [root.event_sink(), *sinks]).start()
    for _ in session.events():
        pass
    session.join()
    assert session.status == "completed", session.error
    return json.loads((out / RESULT_FILE).read_text())


# -- grids --------------------------------------------------------------------------------
def test_expand_is_cartesian_in_file_order_less_the_excludes() -> None:
    points = expand({"a": [1, 2], "b": ["x", "y"]}, [{"a": 2, "b": "y"}])
    assert points == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}]
    with pytest.raises(ConfigError, match="not an axis"):
        expand({"a": [1]}, [{"c": 1}])
    with pytest.raises(ConfigError, match="leave no trial"):
        expand({"a": [1]}, [{"a": 1}])
    with pytest.raises(ConfigError, match="non-empty list"):
        expand({"a": []})


def test_substitute_keeps_a_whole_placeholders_type_and_formats_inside_text() -> None:
    point = {"target": 3, "seed": 1}
    value = {"target_label": "{target}", "text": "W{seed}", "keep": 0.5, "list": ["{seed}"]}
    assert substitute(value, point) == {
        "target_label": 3,
        "text": "W1",
        "keep": 0.5,
        "list": [1],
    }
    assert placeholders(value) == {"target", "seed"}


def test_trial_key_changes_with_any_value_and_not_with_dict_order() -> None:
    assert trial_key({"a": 1, "b": 2}) == trial_key({"b": 2, "a": 1})
    assert trial_key({"a": 1, "b": 2}) != trial_key({"a": 1, "b": 3})


def test_lookup_walks_tables_and_lists() -> None:
    summary = {"retention": {"key": 0.5}, "sizes": [1.0, 2.0]}
    assert lookup(summary, "retention.key") == 0.5
    assert lookup(summary, "sizes.1") == 2.0
    assert lookup(summary, "sizes.7") is None and lookup(summary, "nope.key") is None


# -- the file's checks --------------------------------------------------------------------
#: recipes whose expected numbers come with their first measured run (their files say so)
NOT_MEASURED_YET = {"detectors", "sok"}


def test_every_preset_loads_and_plans_both_scales(tmp_path: Path) -> None:
    assert {"refit", "gan", "newlabel", "piracy", "datafree"} <= set(recipe_names())
    for name in recipe_names():
        recipe = load_recipe(name)
        if recipe.status == "pending":
            assert recipe.pending
            with pytest.raises(ConfigError, match="pending"):
                plan(recipe, "quick", tmp_path)
            continue
        for scale in recipe.scales:
            trials = plan(recipe, scale, tmp_path).trials
            assert len({t.key for t in trials}) == len(trials)  # no two trials share a folder
        if name not in NOT_MEASURED_YET:
            assert any(c.expect.get("quick") for c in recipe.cells), f"{name}: nothing checked"


def test_refit_measures_each_trigger_over_five_seeds_and_two_targets(tmp_path: Path) -> None:
    recipe = load_recipe("refit")
    trials = plan(recipe, "quick", tmp_path).trials
    pattern = [t for t in trials if t.arm == "pattern"]
    for trigger, corner in (("text", "br"), ("square", "tl")):
        for decoys in (0.0, 0.1):
            chosen = [
                t.point
                for t in pattern
                if t.point["trigger"] == trigger and t.point["decoys"] == decoys
            ]
            assert {p["corner"] for p in chosen} == {corner}
            assert len({p["seed"] for p in chosen}) >= 5 and len({p["target"] for p in chosen}) >= 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"paper": None}, "missing field 'paper'"),
        ({"scales": {"fast": {"minutes": 1}}}, "unknown scale 'fast'"),
        ({"scales": {"quick": {}}}, "minutes"),
        ({"color": 1}, "unknown key 'color'"),
    ],
)
def test_bad_recipe_files_are_one_line_naming_the_place(
    change: dict[str, Any], message: str
) -> None:
    raw = tiny_recipe(**change)
    raw = {k: v for k, v in raw.items() if v is not None}
    with pytest.raises(ConfigError, match=message) as caught:
        recipe_from_mapping(raw, "tiny", "tiny.toml")
    assert "\n" not in str(caught.value) and "tiny.toml" in str(caught.value)


def test_an_expected_number_without_a_tolerance_is_refused() -> None:
    raw = tiny_recipe()
    raw["cells"][0]["expect"] = {"quick": {"value": 50.0, "reason": "x"}}
    with pytest.raises(ConfigError, match="needs tolerance"):
        recipe_from_mapping(raw, "tiny", "tiny.toml")


def test_a_placeholder_that_is_no_axis_and_a_bad_param_value_are_refused() -> None:
    raw = tiny_recipe()
    raw["arms"][0]["phases"][0]["params"]["target_label"] = "{tagret}"
    with pytest.raises(ConfigError, match="tagret"):
        recipe_from_mapping(raw, "tiny")
    raw = tiny_recipe()
    raw["arms"][0]["grid"]["target"] = [3, "x"]  # "x" is no label: caught for that trial
    with pytest.raises(ConfigError, match="target-label"):
        recipe_from_mapping(raw, "tiny")


def test_cells_must_name_a_known_phase_measure_and_axis() -> None:
    for change, message in (
        ({"phase": "nope"}, "unknown phase 'nope'"),
        ({"measure": "median"}, "unknown measure"),
        ({"where": {"colour": 1}}, "unknown axis 'colour'"),
        ({"measure": "equals"}, "needs equals"),
    ):
        raw = tiny_recipe()
        raw["cells"][0] = {**raw["cells"][0], **change}
        with pytest.raises(ConfigError, match=message):
            recipe_from_mapping(raw, "tiny")


# -- running ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("recipe") / "out"
    return out, run_recipe(tiny_recipe(), out)


def test_a_tiny_recipe_runs_every_trial_as_a_scenario_and_averages_its_cells(
    finished: tuple[Path, dict[str, Any]],
) -> None:
    out, result = finished
    assert result["complete"] and len(result["trials"]) == 4
    for trial in result["trials"]:
        folder = out / trial["run"]
        assert (folder / "01-embed" / "model.safetensors").is_file()
        assert json.loads((folder / "02-ftb" / "summary.json").read_text())["status"] == "completed"
    accuracy, retention, change = result["cells"]
    accs = [
        json.loads((out / t["run"] / "01-embed" / "summary.json").read_text())["test_acc"] * 100
        for t in result["trials"]
    ]
    assert accuracy["n"] == 4 and accuracy["mean"] == pytest.approx(sum(accs) / 4)
    assert accuracy["ok"] is True and accuracy["paper"] == 90.0
    assert retention["n"] == 2 and retention["ok"] is None  # target 3 only; nothing expected
    ftb = [
        json.loads((out / t["run"] / "02-ftb" / "summary.json").read_text())
        for t in result["trials"]
    ]
    diffs = [s["test_acc"] - s["test_acc_before"] for s in ftb]
    assert change["mean"] == pytest.approx(sum(diffs) / 4)


def test_trials_are_keyed_by_their_configuration(
    finished: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    _, result = finished
    names = sorted(t["id"] for t in result["trials"])
    again = plan(recipe_from_mapping(tiny_recipe(), "tiny"), "quick", tmp_path)
    assert sorted(t.folder_name for t in again.trials) == names
    changed = tiny_recipe()
    changed["arms"][0]["phases"][1]["budget"]["epochs"] = 2
    other = plan(recipe_from_mapping(changed, "tiny"), "quick", tmp_path)
    assert not set(t.folder_name for t in other.trials) & set(names)


def test_resuming_runs_only_what_is_missing_and_gives_the_same_table(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = run_recipe(tiny_recipe(), out)
    trials = [out / t["run"] for t in first["trials"]]
    (trials[1] / "02-ftb" / "summary.json").unlink()  # as if killed in its attack
    kept = {p: p.stat().st_mtime_ns for p in trials[0].rglob("*") if p.is_file()}
    embed_model = trials[1] / "01-embed" / "model.safetensors"
    embed_time = embed_model.stat().st_mtime_ns
    second = run_recipe(tiny_recipe(), out)
    assert {p: p.stat().st_mtime_ns for p in kept} == kept  # a finished trial is not touched
    assert embed_model.stat().st_mtime_ns == embed_time  # nor a finished phase of a cut one
    assert (trials[1] / "02-ftb" / "summary.json").is_file()
    assert [c["mean"] for c in second["cells"]] == [c["mean"] for c in first["cells"]]


def test_a_folder_holding_another_run_is_never_reused(tmp_path: Path) -> None:
    out = tmp_path / "other"
    out.mkdir()
    (out / "manifest.json").write_text(json.dumps({"command": "train", "config": {}}))
    recipe = recipe_from_mapping(tiny_recipe(), "tiny")
    with pytest.raises(RunError, match="holds another run"):
        prepare_recipe(plan(recipe, "quick", out))
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]
    assert not (out / TRIALS).exists()
