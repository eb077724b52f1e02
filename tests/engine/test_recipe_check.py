"""The two verdicts of a recipe check without running anything: the 95% intervals against
hand-computed values, the paper's three outcomes, and the regression rules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from engine.errors import ConfigError
from engine.studies.grid import matches
from engine.studies.intervals import interval95, mean_interval, t95, wilson
from engine.studies.recipe_check import (
    DIFFERS,
    INCONCLUSIVE,
    NO_PAPER,
    REPRODUCES,
    paper_verdict,
    planned_trials,
    regression_verdict,
)
from engine.studies.recipe_file import Cell, Expectation, Regression, recipe_from_mapping
from tests.engine.test_recipes import tiny_recipe


def cell(**changes: object) -> Cell:
    base: dict[str, object] = {
        "name": "c",
        "table": "",
        "arm": "a",
        "phase": "p",
        "metric": "m",
        "where": {},
        "unit": "%",
    }
    return Cell(**(base | changes))  # type: ignore[arg-type]


# -- intervals ----------------------------------------------------------------------------
def test_wilson_matches_a_hand_computed_interval() -> None:
    # 3 of 3 by hand: z² = 3.8415, d = 1 + z²/3 = 2.2805, centre = (1 + z²/6)/d = 0.71925,
    # half = z·sqrt(z²/36)/d = 0.28075, so [0.4385, 1.0]; 5 of 10: centre 0.5, half 0.2634
    low, high = wilson(3, 3)
    assert low == pytest.approx(0.4385, abs=1e-4) and high == pytest.approx(1.0)
    low, high = wilson(5, 10)
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 3) == pytest.approx((0.0, 0.5615), abs=1e-4)


def test_t_interval_and_its_quantiles() -> None:
    # [1, 2, 3]: mean 2, sd 1, t(2 df) = 4.303: 2 ± 4.303/sqrt(3)
    low, high = mean_interval([1.0, 2.0, 3.0])  # type: ignore[misc]
    assert (low, high) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)))
    assert mean_interval([5.0]) is None
    assert t95(30) == 2.042 and t95(60) == pytest.approx(2.000, abs=1e-3)
    assert t95(120) == pytest.approx(1.980, abs=1e-3)
    # outcome cells in percent: 2 of 3 flagged
    low, high = interval95([100.0, 100.0, 0.0], outcome=True, scale=100.0)  # type: ignore[misc]
    assert (low / 100, high / 100) == pytest.approx(wilson(2, 3))


# -- the paper ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "changes", "verdict"),
    [
        ([88.0, 89.0, 90.0, 91.0, 92.0], {"paper": 90.0}, REPRODUCES),
        ([40.0, 41.0, 42.0, 43.0, 44.0], {"paper": 90.0}, DIFFERS),
        ([40.0, 90.0, 99.0], {"paper": 90.0}, INCONCLUSIVE),  # the interval straddles 80
        ([90.0], {"paper": 90.0}, INCONCLUSIVE),  # one value: no interval
        ([90.0, 91.0], {}, NO_PAPER),
        ([95.0, 96.0, 97.0], {"claim": {"at_least": 90.0}}, REPRODUCES),
        ([50.0, 51.0, 52.0], {"claim": {"at_least": 90.0}}, DIFFERS),
        ([1.0, 2.0, 1.5], {"claim": {"at_most": 5.0}}, REPRODUCES),
        ([42.0, 43.0, 44.0], {"paper": 90.0, "margin": 50.0}, REPRODUCES),
    ],
)
def test_the_paper_verdict(values: list[float], changes: dict, verdict: str) -> None:
    found = paper_verdict(cell(**changes), values, outcome=False)
    assert found["verdict"] == verdict, found
    if len(values) > 1:
        low, high = found["interval"]
        assert low <= sum(values) / len(values) <= high


def test_an_outcome_cell_of_three_seeds_cannot_confirm_a_hundred_percent() -> None:
    flagged = cell(paper=100.0, measure="equals")
    assert paper_verdict(flagged, [100.0] * 3, outcome=True)["verdict"] == INCONCLUSIVE
    assert paper_verdict(flagged, [0.0] * 3, outcome=True)["verdict"] == DIFFERS
    assert paper_verdict(flagged, [100.0] * 40, outcome=True)["verdict"] == REPRODUCES


# -- regression ---------------------------------------------------------------------------
RECORD = Regression({"seed=0": 51.0, "seed=1": 49.5}, tolerance=0.5)


def test_regression_holds_within_the_tolerance_and_names_the_trial_outside() -> None:
    recorded = cell(regression={"quick": RECORD})
    same = regression_verdict(recorded, "quick", {"seed=0": 51.0, "seed=1": 49.5}, 50.25)
    assert same["ok"] is True and same["detail"] == "identical"
    near = regression_verdict(recorded, "quick", {"seed=0": 51.4, "seed=1": 49.5}, 50.45)
    assert near["ok"] is True and near["detail"].startswith("within ± 0.5")
    moved = regression_verdict(recorded, "quick", {"seed=0": 51.0, "seed=1": 52.0}, 51.5)
    assert moved["ok"] is False and moved["problems"] == ["seed=1: 52, recorded 49.5 (± 0.5)"]


def test_a_cell_missing_a_planned_trial_fails_whatever_its_mean() -> None:
    recorded = cell(regression={"quick": RECORD})
    found = regression_verdict(recorded, "quick", {"seed=0": 51.0, "seed=1": None}, 51.0)
    assert found["ok"] is False and found["problems"][0] == "1 of 2 trials have a value"
    banded = cell(expect={"quick": Expectation(50.0, 50.0, "any")})
    found = regression_verdict(banded, "quick", {"seed=0": 51.0, "seed=1": None}, 51.0)
    assert found["ok"] is False and found["kind"] == "band"
    unrecorded = regression_verdict(cell(), "quick", {"seed=0": 51.0, "seed=1": None}, 51.0)
    assert unrecorded["ok"] is False


def test_a_trial_the_referee_did_not_judge_passes_only_where_recorded_as_such() -> None:
    """A finished trial without a value (DAWN under a removal attack) is recorded ``"n/a"``;
    the same trial must decline again, and a value that went missing fails as before."""
    na = Regression({"seed=0": 51.0, "seed=1": None}, 0.5)
    recorded = cell(regression={"quick": na})
    declined = {"seed=0": 51.0, "seed=1": None}
    same = regression_verdict(recorded, "quick", declined, 51.0, {"seed=1"})
    assert same["ok"] is True and same["problems"] == []
    lost = regression_verdict(recorded, "quick", declined, 51.0)  # the phase did not finish
    assert lost["ok"] is False and lost["problems"][0] == "1 of 2 trials have a value"
    now_judged = regression_verdict(recorded, "quick", {"seed=0": 51.0, "seed=1": 0.0}, 25.5)
    assert now_judged["ok"] is False and now_judged["problems"] == ["seed=1: 0, recorded n/a"]
    was_judged = regression_verdict(
        cell(regression={"quick": RECORD}), "quick", declined, 51.0, {"seed=1"}
    )
    assert was_judged["ok"] is False and "seed=1: not judged" in was_judged["problems"]
    unrecorded = regression_verdict(cell(), "quick", declined, 51.0, {"seed=1"})
    assert unrecorded["ok"] is False  # nothing says n/a is right: --suggest records it first


def test_suggest_records_a_trial_not_judged_as_n_a_and_the_file_reads_it_back() -> None:
    from engine.studies.recipe_check import suggestions

    result = {
        "cells": [
            {
                "name": "dawn × jpeg: removed-rate",
                "unit": "%",
                "trial_values": {"seed=0": None, "seed=1": 100.0},
                "unjudged": ["seed=0"],
            },
            {"name": "lost", "unit": "%", "trial_values": {"seed=0": None}, "unjudged": []},
        ]
    }
    (_, _, line), (_, comment, missing) = suggestions(result)
    assert line is not None and '"seed=0" = "n/a"' in line and '"seed=1" = 100.0' in line
    assert missing is None and "0 of 1 trials have a value" in comment
    raw = tiny_recipe()
    name = raw["cells"][0]["name"]
    record = {"values": {"seed=0": "n/a", "seed=1": 1.0}, "tolerance": 0.5}
    recipe = recipe_from_mapping(raw | {"regression": {"quick": {name: record}}}, "tiny")
    assert recipe.cells[0].regression["quick"].values == {"seed=0": None, "seed=1": 1.0}


def test_an_old_band_is_checked_but_says_it_is_no_regression_record() -> None:
    banded = cell(expect={"quick": Expectation(50.0, 5.0, "seed spread")})
    found = regression_verdict(banded, "quick", {"seed=0": 52.0, "seed=1": 49.0}, 50.5)
    assert found == found | {"ok": True, "kind": "band", "detail": "band (no regression record)"}
    off = regression_verdict(banded, "quick", {"seed=0": 80.0, "seed=1": 70.0}, 75.0)
    assert off["ok"] is False and off["detail"] == "mean 75 outside 50 ± 5"
    assert regression_verdict(cell(), "quick", {"seed=0": 1.0}, 1.0)["ok"] is None
    unknown = regression_verdict(cell(regression={"quick": RECORD}), "quick", {"seed=7": 1.0}, 1)
    assert unknown["problems"][0] == "seed=7: no recorded value (run --suggest)"
    assert (
        "seed=0: recorded but not planned (the grid changed? record again)" in unknown["problems"]
    )
    nothing = regression_verdict(cell(regression={"quick": RECORD}), "quick", {}, None)
    assert nothing["ok"] is False  # no planned trial left: the record's trials are gone


RECORD_OK = {"values": {"seed=0 target=3": 1.0}, "tolerance": 0.5}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"regression": {"quick": {"accuracy": {"tolerance": 0.5}}}}, "values: missing"),
        ({"regression": {"quick": {"accuracy": {"values": {"seed=0": 1}}}}}, "tolerance: must"),
        ({"regression": {"huge": {"accuracy": RECORD_OK}}}, "unknown scale 'huge'"),
        ({"regression": {"quick": {"acuracy": RECORD_OK}}}, "did you mean 'accuracy'"),
        ({"cells": [{"claim": {"about": 90}}]}, "a claim is one of"),
        ({"cells": [{"margin": 0}]}, "margin must be a number > 0"),
        ({"cells": [{"must_reproduce": "yes"}]}, "must_reproduce must be true or false"),
    ],
)
def test_bad_records_and_claims_are_refused_in_one_line(extra: dict, message: str) -> None:
    raw = tiny_recipe()
    if "cells" in extra:
        raw["cells"][0].update(extra["cells"][0])
    else:
        raw.update(extra)
    with pytest.raises(ConfigError) as caught:
        recipe_from_mapping(raw, "tiny")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_record_reaches_its_cell_by_name() -> None:
    raw = tiny_recipe(regression={"quick": {"accuracy change": RECORD_OK}})
    cells = {c.name: c for c in recipe_from_mapping(raw, "tiny").cells}
    assert cells["accuracy change"].regression["quick"].values == {"seed=0 target=3": 1.0}
    assert cells["accuracy"].regression == {}


def test_planned_trials_are_those_matching_the_cells_where() -> None:
    # the lookup is an index; it must agree with matching every trial (tables, 1 and 1.0)
    phases = SimpleNamespace(phases=[SimpleNamespace(name="p")])
    tables = [{"name": "ftb", "epochs": 1}, {"name": "ftb", "epochs": 2}]
    trials = [
        SimpleNamespace(arm=arm, point={"seed": seed, "attack": attack}, scenario=phases)
        for arm in ("a", "b")
        for seed in (0, 1)
        for attack in tables
    ]
    run = SimpleNamespace(trials=trials)
    for where in ({}, {"seed": 1.0}, {"attack": {"epochs": 2, "name": "ftb"}}, {"seed": 7}):
        found = planned_trials(run, cell(where=where))  # type: ignore[arg-type]
        assert found == [t for t in trials if t.arm == "a" and matches(t.point, where)]
    assert len(planned_trials(run, cell(where={"seed": 1.0}))) == 2  # type: ignore[arg-type]
    assert planned_trials(run, cell(phase="other")) == []  # type: ignore[arg-type]
