"""benchmarks/extraction_claims.py decides the papers' claims from the extraction table's rows
by statistical rules that can fail: an exact permutation test for EWE against pattern, and
DAWN judged on its stolen copies' key accuracy. No job runs here: the table is a benchmark."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import extraction  # noqa: E402
import extraction_claims as claims  # noqa: E402


def row(scheme: str, attack: str, wm: float, removed: bool | None = None) -> dict[str, Any]:
    return {
        "scheme": scheme,
        "attack": attack,
        "status": "completed",
        "wm_accuracy": wm,
        "test_acc": 0.85,
        "removed": removed,
    }


def test_the_permutation_p_value_is_exact() -> None:
    assert claims.permutation_p([3, 4, 5], [0, 1, 2]) == pytest.approx(1 / 20)
    assert claims.permutation_p([0, 1, 2], [3, 4, 5]) == 1.0
    assert claims.permutation_p([1, 1], [1, 1]) == 1.0  # ties: nothing to see


@pytest.mark.parametrize(
    ("ewe", "pattern", "verdict"),
    [
        ([0.4, 0.5, 0.6], [0.01, 0.02, 0.0], claims.REPRODUCES),
        ([0.4, 0.01, 0.6], [0.01, 0.02, 0.0], claims.INCONCLUSIVE),  # one seed overlaps
        ([0.0, 0.01, 0.0], [0.01, 0.02, 0.0], claims.REFUTED),
    ],
)
def test_the_ewe_claim_follows_the_seeds(ewe, pattern, verdict) -> None:
    rows = [row("ewe", "retraining", v) for v in ewe] + [
        row("pattern", "retraining", v) for v in pattern
    ]
    assert claims.ewe_claim(rows)["verdict"] == verdict


def test_dawn_is_judged_on_the_stolen_copies_key_accuracy() -> None:
    stolen = [row("dawn", "retraining", v) for v in (0.01, 0.02, 0.0)]
    smooth = [row("dawn", "smooth-retraining", 0.0, removed=True) for _ in range(3)]
    kept, defeat = claims.dawn_claims(stolen + smooth, ["retraining", "smooth-retraining"], 0.025)
    assert kept["verdict"] == claims.REFUTED and "0/3" in kept["evidence"]
    assert defeat["verdict"] == claims.REPRODUCES
    learnt = [row("dawn", "retraining", v) for v in (0.3, 0.4, 0.2)]
    kept, _ = claims.dawn_claims(learnt, ["retraining"], 0.025)
    assert kept["verdict"] == claims.REPRODUCES
    assert claims.dawn_claims(learnt, ["retraining"], None)[0]["verdict"] == claims.INCONCLUSIVE


def test_bad_input_is_one_line_and_exit_2(capsys) -> None:
    assert extraction.main(["--schemes", "nope", "--list"]) == 2
    assert extraction.main(["--attacks", "retrain", "--list"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: unknown") for line in err)


def test_the_thiefs_budget_is_a_third_of_the_data_or_another_distribution() -> None:
    quick = extraction.SCALES["quick"]
    assert extraction.budget_for("retraining", quick)["data_fraction"] == pytest.approx(1 / 3, 1e-3)
    knockoff = extraction.budget_for("knockoff", quick)
    assert knockoff["unlabeled"] == "synthetic" and knockoff["data_fraction"] == 0
