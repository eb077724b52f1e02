"""The SoK success rule and an attack's cost, on the rule itself and on real attack jobs."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from engine.errors import ConfigError
from engine.jobs import JobSpec, run
from engine.jobs.success import judge, primary_key_accuracy
from engine.jobs.threshold import ThresholdRecord, key_size_of, save_record

KEYS = {"removed", "kept_accuracy", "wm_accuracy", "threshold", "reference_test_acc", "why"}


def test_judge_removed_only_when_useful_and_below_the_threshold() -> None:
    base = judge(0.88, 0.10, 0.90, 0.20)
    assert set(base) == KEYS and base["removed"] is True
    assert base["kept_accuracy"] == 0.88 and base["wm_accuracy"] == 0.10
    # the key accuracy above the threshold: the mark survived
    assert judge(0.88, 0.21, 0.90, 0.20)["removed"] is False
    # at the threshold counts as unmarked (the SoK's "at or below")
    assert judge(0.88, 0.20, 0.90, 0.20)["removed"] is True
    # the model lost more than 5 points: not a removal, however low the key accuracy
    broken = judge(0.84, 0.0, 0.90, 0.20)
    assert broken["removed"] is False and "below 90.0%" in broken["why"]
    assert judge(0.85, 0.0, 0.90, 0.20)["removed"] is True  # exactly 5 points
    assert judge(0.84, 0.0, 0.90, 0.20, margin=0.1)["removed"] is True
    # better than the unmarked model is fine
    assert judge(0.97, 0.0, 0.90, 0.20)["removed"] is True


@pytest.mark.parametrize(
    ("wm", "ref", "thr", "says"),
    [
        (None, 0.9, 0.2, "no key accuracy"),
        (0.1, None, 0.2, "--reference-acc"),
        (0.1, 0.9, None, "wmtui threshold"),
    ],
)
def test_judge_is_unknown_when_a_number_is_missing(wm, ref, thr, says) -> None:
    verdict = judge(0.9, wm, ref, thr)
    assert verdict["removed"] is None and says in verdict["why"]


def test_primary_key_accuracy_is_the_original_key_or_duals_true_key() -> None:
    assert primary_key_accuracy({"key": 0.4, "key-2": 0.9}) == 0.4
    assert primary_key_accuracy({"key null": 0.9, "key true": 0.3}) == 0.3
    assert primary_key_accuracy({}) is None


def attack(source: Path, name: str, out: Path | None = None, **values) -> dict:
    spec = JobSpec.attack(name, run=source, device="cpu", eval_every=10**6, out=out, **values)
    result = run(spec)
    assert result.status == "completed"
    return result.summary


def test_an_attack_that_changes_nothing_is_not_a_removal(pattern_run, tmp_path) -> None:
    summary = attack(
        pattern_run, "prune", tmp_path / "out", ratio=0.0, threshold=0.3, reference_acc=0.5
    )
    assert set(summary) >= KEYS
    assert summary["wm_accuracy"] == summary["retention"]["key"] > 0.3
    assert summary["removed"] is False and summary["kept_accuracy"] == summary["test_acc"]
    cost = summary["cost"]
    assert set(cost) == {"seconds", "images", "labels", "queries"}
    assert cost["queries"] == 0 and cost["images"] == 0 and cost["seconds"] >= 0
    # a threshold above the key accuracy before the attack: there was no watermark to
    # remove, so the rule does not call the attack a removal (the SoK's rule would say yes)
    again = attack(pattern_run, "prune", ratio=0.0, threshold=0.99, reference_acc=0.5)
    assert again["removed"] is None and "no watermark to remove" in again["why"]
    assert again["wm_accuracy"] == summary["wm_accuracy"]  # the numbers are kept


def test_the_report_of_an_attack_shows_its_verdict_and_cost(pattern_run, tmp_path) -> None:
    from engine.reports import build

    out = tmp_path / "attacked"
    attack(pattern_run, "prune", out, ratio=0.0, threshold=0.3, reference_acc=0.5)
    page = build(out).page
    assert "removed (SoK)" in page and "key acc" in page  # the reason, on hover
    row = page[page.index("<td>attack</td>") :]
    row = row[: row.index("</tr>")]
    assert ">no</span>" in row and "0 images (0 labelled), 0 queries" in row


def test_without_a_threshold_the_verdict_is_unknown_and_names_the_command(pattern_run) -> None:
    summary = attack(pattern_run, "prune", ratio=0.0)
    assert summary["removed"] is None
    assert "wmtui threshold --scheme pattern --dataset synthetic --model lenet5" in summary["why"]


def record(threshold: float, test_acc_mean: float) -> None:
    """A threshold record of the pattern run's (dataset, model, scheme, key size), as the
    threshold job would cache it."""
    save_record(
        ThresholdRecord(
            threshold=threshold,
            p=0.05,
            null_models=5,
            null_key_acc=[0.05, 0.1, 0.08, 0.12, 0.07],
            null_test_acc_mean=test_acc_mean,
            dataset="synthetic",
            arch="lenet5",
            scheme="pattern",
            key_size=key_size_of("pattern", {}),
        )
    )


def test_the_cached_threshold_and_null_accuracy_decide(pattern_run) -> None:
    owner_acc = json.loads((pattern_run / "summary.json").read_text())["test_acc"]
    record(0.2, owner_acc)
    kept = attack(pattern_run, "prune", ratio=0.0)
    assert kept["threshold"] == 0.2 and kept["reference_test_acc"] == owner_acc
    assert kept["removed"] is False  # the key is still answered far above the threshold
    # an attack that destroyed the model is no removal: pruning 99% of the weights
    broken = attack(pattern_run, "prune", ratio=0.99)
    assert broken["kept_accuracy"] < owner_acc - 0.05 and broken["removed"] is False
    # a copy learnt from the model's answers on clean images does not learn the trigger
    stolen = attack(pattern_run, "retraining", data_fraction=0.5, steps=150, reference_acc=0.0)
    assert stolen["wm_accuracy"] <= 0.2 < kept["wm_accuracy"] and stolen["removed"] is True
    record(1.0, owner_acc)  # every key accuracy is at or below 1.0: nothing to remove
    nothing = attack(pattern_run, "prune", ratio=0.0)
    assert nothing["removed"] is None and "no watermark to remove" in nothing["why"]
    # the user's own numbers win over the record's
    given = attack(pattern_run, "prune", ratio=0.0, threshold=0.2)
    assert given["threshold"] == 0.2 and given["removed"] is False


def test_ftau_counts_one_query_per_image_the_suspect_labels(pattern_run) -> None:
    summary = attack(
        pattern_run,
        "ftau",
        data_fraction=0.1,
        unlabeled="synthetic",
        unlabeled_count=60,  # three whole batches a pass
        steps=6,
        unlabeled_batch=20,
        batch=16,
    )
    cost = summary["cost"]
    assert cost["queries"] == 6 * 20  # one answer per pseudo-labelled image of each step
    labelled = summary["labeled_images"]
    assert cost["labels"] == labelled > 0 and cost["images"] == labelled + 60


def test_distill_counts_the_teachers_answers(pattern_run) -> None:
    summary = attack(
        pattern_run,
        "distill",
        data_fraction=0.0,
        unlabeled="synthetic",
        unlabeled_count=40,
        steps=5,
        batch=20,
    )
    cost = summary["cost"]
    # each unlabelled image asked once, whatever the steps: the thief keeps its answers
    assert cost["queries"] == 40 and cost["images"] == 40 and cost["labels"] == 0


def test_sweep_rows_are_judged(pattern_run) -> None:
    summary = attack(pattern_run, "prune", sweep=[0.0, 0.5], threshold=0.3, reference_acc=0.5)
    rows = summary["sweep"]
    assert rows[0]["removed"] is False
    assert all({"removed", "kept_accuracy", "wm_accuracy"} <= set(row) for row in rows)
    assert summary["cost"]["queries"] == 0


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"threshold": 1.5}, "--threshold must be in [0, 1]"),
        ({"reference_acc": -0.1}, "--reference-acc"),
    ],
)
def test_bad_rule_values_are_refused_before_anything_is_written(
    pattern_run, tmp_path, values, fragment
) -> None:
    spec = JobSpec.attack("prune", run=pattern_run, out=tmp_path / "out", **values)
    with pytest.raises(ConfigError, match=fragment.replace("[", r"\[")):
        spec.validate()
    assert not (tmp_path / "out").exists()


def test_a_recipe_cell_averages_removed_into_a_removed_rate(tmp_path) -> None:
    from tests.engine.test_recipes import run_recipe, tiny_recipe

    record(0.5, 0.1)  # the tiny models' cached threshold: what every trial is judged by
    raw = tiny_recipe()
    arm = raw["arms"][0]
    arm["grid"] = {"seed": [0, 1], "target": [3]}
    arm["phases"][1] = {"name": "cut", "kind": "attack", "attack": "prune", "params": {}}
    raw["cells"] = [{"name": "removed", "phase": "cut", "metric": "removed", "unit": "%"}]
    result = run_recipe(raw, tmp_path / "out")
    verdicts = [
        json.loads((tmp_path / "out" / t["run"] / "02-cut" / "summary.json").read_text())
        for t in result["trials"]
    ]
    assert all(v["threshold"] == 0.5 for v in verdicts)
    # a tiny model whose key did not take is not judged (it holds nothing to remove)
    judged = [v["removed"] for v in verdicts if v["removed"] is not None]
    for v in verdicts:
        assert v["removed"] is not None or v["retention_before"]["key"] <= 0.5
    assert judged, "no trial was judged: the test no longer tests the average"
    cell = result["cells"][0]
    assert cell["n"] == len(judged) and cell["mean"] == pytest.approx(
        100 * statistics.fmean(judged)
    )
    assert cell["outcome"] and len(cell["unjudged"]) == len(verdicts) - len(judged)


def test_a_deployed_model_is_judged_by_its_classifiers_threshold(pattern_run, tmp_path) -> None:
    owner_acc = json.loads((pattern_run / "summary.json").read_text())["test_acc"]
    record(0.2, owner_acc)
    served = attack(pattern_run, "jpeg", tmp_path / "served", quality=90)
    assert served["threshold"] == 0.2 and isinstance(served["removed"], bool)
    assert served["cost"]["images"] == 0 and served["cost"]["queries"] == 0
    # an attack on the served run finds the owner's key and the same record through it
    again = attack(tmp_path / "served", "prune", ratio=0.0)
    assert again["threshold"] == 0.2 and again["wm_accuracy"] == again["retention"]["key"]


def test_a_scenario_attack_phase_takes_the_rules_numbers(tmp_path) -> None:
    from tests.engine.test_scenarios import run_scenario, tiny

    cut = {"kind": "attack", "attack": "prune", "params": {"ratio": 0.0}}
    raw = tiny(
        [
            {"name": "owner", "kind": "embed", "scheme": "pattern"},
            {**cut, "name": "kept", "threshold": 0.0, "reference_acc": 0.0},
            {**cut, "name": "gone", "threshold": 1.0, "reference_acc": 0.0, "on": "owner"},
        ]
    )
    session, _ = run_scenario(raw, tmp_path / "sc")
    assert session.status == "completed"
    phases = json.loads((tmp_path / "sc" / "summary.json").read_text())["phases"]
    verdicts = {p["name"]: p.get("removed") for p in phases}
    kept = json.loads((tmp_path / "sc" / "02-kept" / "summary.json").read_text())
    gone = json.loads((tmp_path / "sc" / "03-gone" / "summary.json").read_text())
    # a key accuracy above 0 survives a threshold of 0; every one is at or below 1, so at 1
    # there was no watermark to remove and the phase is not judged
    assert kept["retention_before"]["key"] > 0.0
    assert verdicts == {"owner": None, "kept": kept["wm_accuracy"] == 0.0, "gone": None}
    assert kept["threshold"] == 0.0 and kept["reference_test_acc"] == 0.0
    assert gone["threshold"] == 1.0 and "no watermark to remove" in gone["why"]


@pytest.mark.parametrize(("key", "value"), [("threshold", 2), ("reference_acc", "high")])
def test_a_scenario_refuses_a_bad_rule_number_naming_the_phase(key, value) -> None:
    from engine.studies.scenarios import scenario_from_mapping
    from tests.engine.test_scenarios import tiny

    raw = tiny([{"kind": "train"}, {"kind": "attack", "attack": "prune", key: value}])
    with pytest.raises(ConfigError, match=f"\\[\\[phases\\]\\] prune: {key} must be"):
        scenario_from_mapping(raw, name="bad")
    # an embedding takes none
    raw = tiny([{"kind": "embed", "scheme": "pattern", "threshold": 0.5}])
    with pytest.raises(ConfigError, match="unknown key 'threshold'"):
        scenario_from_mapping(raw, name="bad")


@pytest.mark.parametrize(("labels", "true_labels"), [("suspect", False), ("true", True)])
def test_labels_the_suspect_gave_are_not_counted_as_true_labels(
    pattern_run, labels: str, true_labels: bool
) -> None:
    """label-smoothing fine-tunes on the attacker's images labelled by the suspect (WRT's
    default) or by their true labels: the cost says which, the images are counted alike."""
    summary = attack(pattern_run, "label-smoothing", data_fraction=0.1, steps=2, labels=labels)
    cost, labelled = summary["cost"], summary["labeled_images"]
    assert cost["images"] == labelled > 0
    assert cost["labels"] == (labelled if true_labels else 0)
    assert cost["queries"] == (0 if true_labels else labelled)
