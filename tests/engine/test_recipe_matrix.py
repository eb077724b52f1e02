"""A recipe's matrix: axes of tables, the cells and claims a ``[matrix]`` table makes, the
``sok`` recipe's plan, and a tiny synthetic matrix run end to end."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigError
from engine.session import Session
from engine.studies.grid import placeholders, point_label, substitute
from engine.studies.recipe_file import Recipe, load_recipe, recipe_from_mapping
from engine.studies.recipe_matrix import (
    CLAIMS_TABLE,
    Claim,
    Matrix,
    MatrixMetric,
    MatrixTable,
    claim_holds,
    matrix_table,
    trials_of,
)
from engine.studies.recipes import RecipeRun, load_result, plan, prepare_recipe

#: two schemes x two attacks on synthetic data, the SoK rule's numbers given: seconds
TINY_MATRIX = """
title = "tiny matrix"
paper = "Nobody et al."
source = "Table 0"

[train]
dataset = "synthetic"
train_size = 256
test_size = 128
epochs = 1
optimizer = "adam"
lr = 0.003
device = "cpu"

[scales.quick]
minutes = 1

[[arms]]
name = "single"
[arms.grid]
seed = [0]
scheme = [{ name = "pattern", params = { trigger = "square" } }, { name = "abstract", params = {} }]
attack = [
  { name = "jpeg-10", attack = "jpeg", params = { quality = 10 }, epochs = 1 },
  { name = "wq", attack = "weight-quantization", params = { bits = 2 }, epochs = 1 },
]

[[arms.phases]]
name = "embed"
kind = "embed"
scheme = "{scheme.name}"
params = "{scheme.params}"

[[arms.phases]]
name = "attack"
kind = "attack"
attack = "{attack.attack}"
params = "{attack.params}"
on = "embed"
budget = { data_fraction = 0.25, epochs = "{attack.epochs}" }
threshold = 0.1
reference_acc = 0.1

[matrix]
rows = "scheme"
columns = "attack"
phase = "attack"
metrics = [
  { name = "removed-rate", metric = "removed", unit = "%" },
  { name = "accuracy kept", metric = "test_acc", base = "test_acc_before" },
]

[[matrix.claims]]
name = "no scheme survives"
every = "row"
has = "removed"
"""


def matrix_recipe() -> dict[str, Any]:
    return tomllib.loads(TINY_MATRIX)


def run_tiny_matrix(folder: Path) -> tuple[Recipe, RecipeRun, dict[str, Any]]:
    """The tiny matrix from its file (as ``wmtui reproduce FILE`` reads it), run whole."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tiny.toml").write_text(TINY_MATRIX)
    recipe = load_recipe(str(folder / "tiny.toml"))
    run = plan(recipe, "quick", folder / "out")
    job, _root, sinks = prepare_recipe(run)
    session = Session(job, sinks)
    session.start()
    session.join(300)
    assert session.status == "completed"
    result = load_result(run.out)
    assert result is not None
    return recipe, run, result


# -- axes of tables -------------------------------------------------------------------------
def test_a_dotted_placeholder_takes_one_field_of_a_table_value() -> None:
    point = {"attack": {"name": "jpeg-10", "attack": "jpeg", "params": {"quality": 10}}}
    phase = {"attack": "{attack.attack}", "params": "{attack.params}", "title": "x {attack.name}"}
    assert substitute(phase, point) == {
        "attack": "jpeg",
        "params": {"quality": 10},
        "title": "x jpeg-10",
    }
    assert placeholders(phase) == {"attack"}
    assert point_label({"seed": 1, **point}) == "seed=1 attack=jpeg-10"


def test_a_missing_field_is_one_config_error() -> None:
    with pytest.raises(ConfigError, match="no field 'epochs'"):
        substitute("{attack.epochs}", {"attack": {"name": "jpeg"}})


# -- the [matrix] table ---------------------------------------------------------------------
def test_the_matrix_makes_a_cell_per_row_column_and_metric_and_one_per_claim() -> None:
    recipe = recipe_from_mapping(matrix_recipe(), "tiny")
    names = [c.name for c in recipe.cells]
    assert len(names) == 2 * 2 * 2 + 1
    assert "abstract × wq: accuracy kept" in names
    pattern_jpeg = next(c for c in recipe.cells if c.name == "pattern × jpeg-10: removed-rate")
    assert pattern_jpeg.where["attack"]["attack"] == "jpeg"
    assert recipe.cells[-1].table == CLAIMS_TABLE


def test_a_wall_time_metric_is_never_recorded_for_regression() -> None:
    raw = matrix_recipe()
    raw["matrix"]["metrics"].append({"name": "cost", "metric": "cost.seconds", "record": False})
    recipe = recipe_from_mapping(raw, "tiny")
    recorded = {c.name: c.record for c in recipe.cells if c.table != CLAIMS_TABLE}
    assert recorded["pattern × wq: cost"] is False
    assert recorded["pattern × wq: removed-rate"] is True  # the others still are


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["metrics"][0].update(record="no"), "record must be true or false"),
        (lambda m: m.update(rows="target"), "no arm has both axes"),
        (lambda m: m.update(phase="nope"), "no phase 'nope'"),
        (lambda m: m.update(colour="speed"), "colour 'speed'"),
        (lambda m: m.update(removed_at=2), "removed_at"),
        (lambda m: m["claims"][0].update(every="diagonal"), "every must be one of"),
        (lambda m: m.update(typo=1), "unknown key 'typo'"),
    ],
)
def test_a_wrong_matrix_table_is_one_line_naming_it(change: Any, message: str) -> None:
    raw = matrix_recipe()
    change(raw["matrix"])
    with pytest.raises(ConfigError, match=message) as info:
        recipe_from_mapping(raw, "tiny")
    assert "[matrix]" in str(info.value) and "\n" not in str(info.value)


def test_claims_are_judged_on_the_whole_matrix() -> None:
    matrix = Matrix("scheme", "attack", "attack", "removed", [MatrixMetric("removed", "r")], [])
    rates = {("a", "x"): 1.0, ("a", "c1"): 1.0, ("b", "x"): 0.0, ("b", "c1"): 0.5}
    table = MatrixTable(["a", "b"], ["x", "c1"], {k: {"removed": v} for k, v in rates.items()}, {})
    every_scheme_falls = Claim("n", "row", "removed")
    assert claim_holds(every_scheme_falls, matrix, table) == (True, 4)
    no_attack_removes_all = Claim("n", "column", "kept", not_columns="c*")
    assert claim_holds(no_attack_removes_all, matrix, table)[0] is True
    combined_remove_all = Claim("n", "cell", "removed", columns="c*")
    assert claim_holds(combined_remove_all, matrix, table)[0] is True
    rates[("b", "c1")] = 0.4  # under removed_at: b keeps its mark against the combined attack
    table.values[("b", "c1")] = {"removed": 0.4}
    assert claim_holds(combined_remove_all, matrix, table)[0] is False
    table.values[("b", "c1")] = {"removed": None}  # not measured yet: no verdict
    assert claim_holds(combined_remove_all, matrix, table) == (None, 1)
    table.done.add(("b", "c1"))  # finished without a value: left out of the claim
    assert claim_holds(combined_remove_all, matrix, table) == (True, 1)
    assert claim_holds(every_scheme_falls, matrix, table) == (False, 3)  # b kept its mark


# -- the sok recipe -------------------------------------------------------------------------
def test_the_sok_recipe_plans_every_scheme_against_every_attack() -> None:
    from engine.attacks import ATTACKS as REGISTRY
    from engine.watermarks import SCHEMES

    recipe = load_recipe("sok")
    run = plan(recipe, "quick", Path("unused"))
    schemes = {point_label({"s": t.point["scheme"]}) for t in run.trials}
    planned_schemes = {s.removeprefix("s=") for s in schemes}
    # every scheme of the matrix is registered (a scheme registered later joins the file)
    assert planned_schemes <= {p.name for p in SCHEMES} and len(planned_schemes) >= 11
    removal = {p.name for p in REGISTRY if p.family != "detection"} - {"piracy"}
    planned = {t.point["attack"].get("attack") for t in run.trials if t.arm == "single"}
    assert planned == removal  # every registered attack but the detectors and the claim attack
    combined = {t.point["attack"]["chain"] for t in run.trials if t.arm == "combined"}
    assert combined == {f"sok-combined-{i}" for i in range(1, 6)}
    assert {t.point["seed"] for t in run.trials} == {0, 1, 2}
    columns = len(recipe.arm("single").grid["attack"]) + len(combined)
    assert len(run.trials) == len(planned_schemes) * columns * 3
    claims = [c.name for c in recipe.cells if c.table == CLAIMS_TABLE]
    assert len(claims) == 3 and "no attack removes every scheme" in claims
    quick = next(t for t in run.trials if t.point["attack"].get("attack") == "knockoff")
    budget = quick.scenario.phase("attack").budget
    assert budget["unlabeled"] == "synthetic" and budget["data_fraction"] == 0.0
    paper = plan(recipe, "paper", Path("unused"))
    wrt = next(t for t in paper.trials if t.point["attack"].get("attack") == "finetune")
    assert wrt.config.dataset == "cifar10" and wrt.scenario.phase("attack").budget[
        "data_fraction"
    ] == pytest.approx(1 / 3, abs=1e-3)


# -- a tiny matrix, run ---------------------------------------------------------------------
def test_a_tiny_matrix_runs_and_fills_its_table(tmp_path: Path) -> None:
    recipe, run, result = run_tiny_matrix(tmp_path)
    table = matrix_table(recipe.matrix, result["cells"])
    assert table.rows == ["pattern", "abstract"] and table.columns == ["jpeg-10", "wq"]
    for row in table.rows:
        for column in table.columns:
            assert table.value(row, column, "removed-rate") in (0.0, 100.0)
            assert table.counts[(row, column)] == 1
            (trial,) = trials_of(recipe.matrix, result["trials"], row, column)
            assert (run.out / trial["run"]).is_dir()
    claim = next(c for c in result["cells"] if c["table"] == CLAIMS_TABLE)
    removed = [table.value(r, c, "removed-rate") for r in table.rows for c in table.columns]
    rows_removed = all(
        any(table.value(r, c, "removed-rate") == 100.0 for c in table.columns) for r in table.rows
    )
    assert claim["mean"] == (100.0 if rows_removed else 0.0), removed


def test_the_sok_recipes_phases_run_on_synthetic_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sok file's own arms cut to three schemes (pattern, from scratch; dawn, embedded into
    the trained model, whose mark only its stolen copies carry; uchida, read from the weights
    with no threshold's null models), one single and one combined
    attack, a seed and two null models: every phase kind runs, and the claims leave out the
    cells the referee cannot judge rather than wait for them."""
    from engine.studies import presets

    monkeypatch.setenv("WMTUI_CACHE_DIR", str(tmp_path / "cache"))  # its own null models
    raw = presets.resolve("recipe", "sok").read()
    raw["train"] = {**matrix_recipe()["train"], "eval_every": 10**6}
    raw["scales"].pop("paper")
    raw.pop("regression")  # the records name the whole grid's cells, not this cut's
    kept = ("pattern", "dawn", "uchida")
    for arm in raw["arms"]:
        arm["grid"] = {
            "seed": [0],
            "scheme": [s for s in arm["grid"]["scheme"] if s["name"] in kept],
            "attack": [a for a in arm["grid"]["attack"] if a["name"] in ("jpeg", "sok-combined-1")],
        }
        for phase in arm["phases"]:
            if phase["name"] == "threshold":
                phase["params"]["null_models"] = 2
    recipe = recipe_from_mapping(raw, "sok-tiny")
    run = plan(recipe, "quick", tmp_path / "out")
    assert [t.arm for t in run.trials] == ["single"] * 3 + ["combined"] * 3
    job, _root, sinks = prepare_recipe(run)
    session = Session(job, sinks).start()
    session.join(300)
    assert session.status == "completed", session.error
    result = load_result(run.out)
    assert result is not None and result["complete"]
    table = matrix_table(recipe.matrix, result["cells"], result["trials"])
    assert table.rows == ["pattern", "uchida", "dawn"]
    assert table.columns == ["jpeg", "sok-combined-1"]
    for column in table.columns:
        assert table.value("pattern", column, "removed-rate") in (0.0, 100.0)
        assert table.value("pattern", column, "attack cost") is not None
        assert table.value("uchida", column, "removed-rate") in (0.0, 100.0)
        # dawn's mark is read on stolen copies: a removal attack's cell is not judged
        assert table.not_applicable("dawn", column, "removed-rate")
        assert table.value("dawn", column, "accuracy kept") is not None
    claims = {c["name"]: c["mean"] for c in result["cells"] if c["table"] == CLAIMS_TABLE}
    assert set(claims) == {c.name for c in recipe.matrix.claims} and len(claims) == 3
    for claim in recipe.matrix.claims:
        holds, _ = claim_holds(claim, recipe.matrix, table)
        assert holds is not None  # every cell finished: no claim waits
        assert claims[claim.name] == (100.0 if holds else 0.0)


def test_suggest_into_writes_a_trial_not_judged_as_n_a(tmp_path: Path) -> None:
    """The copy holds ``"n/a"`` for a trial the referee declined to judge, read back as None
    (the sok matrix's first records crashed here on a None value)."""
    from engine.studies.recipe_records import write_records

    (tmp_path / "tiny.toml").write_text(TINY_MATRIX)
    recipe = load_recipe(str(tmp_path / "tiny.toml"))
    declined = {"seed=0": None}
    cells = [
        {"name": "pattern × wq: removed-rate", "unit": "%", "trial_values": declined},
        {"name": "abstract × wq: removed-rate", "unit": "%", "trial_values": {"seed=0": 100.0}},
    ]
    cells[0]["unjudged"] = ["seed=0"]
    copy = tmp_path / "copy.toml"
    assert write_records(recipe, {"scale": "quick", "cells": cells}, copy) == 2
    assert '"seed=0" = "n/a"' in copy.read_text()
    records = {c.name: c.regression.get("quick") for c in load_recipe(str(copy)).cells}
    assert records["pattern × wq: removed-rate"].values == declined  # type: ignore[union-attr]
    assert records["abstract × wq: removed-rate"].values == {"seed=0": 100.0}  # type: ignore[union-attr]
