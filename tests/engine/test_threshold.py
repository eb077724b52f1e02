"""The SoK's decision threshold: the estimator against hand and WRT-style computations, the
threshold job's null models (trained once, then reused from the cache), find_threshold's
keying, a scenario phase, and verify's threshold verdict."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from statistics import NormalDist
from typing import Any

import pytest

from engine.events import Metrics, Phase
from engine.jobs import JobSpec, run, start, verify_run
from engine.jobs.threshold import cache_root, find_threshold, record_path
from engine.metrics import binomial_tail, decision_threshold
from engine.runs import RunDir
from engine.session import Session
from engine.studies.scenario_runner import prepare_scenario
from engine.studies.scenarios import scenario_from_mapping

TINY = {
    "dataset": "synthetic",
    "train_size": 256,
    "test_size": 128,
    "epochs": 1,
    "eval_every": 4,
    "device": "cpu",
}


def threshold_spec(scheme: str, **params: Any) -> JobSpec:
    return JobSpec("threshold", params={"scheme": scheme, "null_models": 2, **params}, config=TINY)


def null_folders() -> list[Path]:
    folder = cache_root() / "null-models"
    return sorted(folder.iterdir()) if folder.is_dir() else []


# -- the estimator --------------------------------------------------------------------------
def test_estimator_matches_a_hand_computation() -> None:
    # mean 0.25, population sd sqrt(0.0125) = 0.111803; z(0.95) = 1.644854
    assert decision_threshold([0.1, 0.2, 0.3, 0.4]) == pytest.approx(
        0.25 + 1.644854 * 0.111803, abs=1e-5
    )
    assert decision_threshold([0.1, 0.2, 0.3, 0.4], p=0.01) == pytest.approx(
        0.25 + 2.326348 * 0.111803, abs=1e-5
    )
    assert decision_threshold([0.9, 1.0]) == 1.0  # clipped to [0, 1]


def test_estimator_agrees_with_wrts_grid_search_on_counts() -> None:
    """WRT scans 1000 points of [0, 20 mean] (in matched keys) for the first at which the
    fitted normal's cdf reaches 1 - p: ours is the same quantile without the grid's step."""
    counts = [3, 7, 4, 9, 5, 2, 6]
    keylen = 100
    mean = sum(counts) / len(counts)
    sd = math.sqrt(sum((c - mean) ** 2 for c in counts) / len(counts))
    step = 20 * mean / 999
    grid = next(i * step for i in range(1000) if NormalDist(mean, sd).cdf(i * step) >= 0.95)
    ours = decision_threshold([c / keylen for c in counts])
    assert abs(ours * keylen - grid) <= step


def test_degenerate_nulls_get_a_binomial_margin_not_zero() -> None:
    """Every null model at 0: WRT ends at 0 (one chance match would mark a clean model);
    ours is the chance-match quantile of a 100-sample key at the observations' upper rate."""
    t = decision_threshold([0.0] * 5, key_size=100)
    k = round(t * 100)
    assert t == k / 100 and 0.01 <= t < 0.1
    # the Wilson (z 3) upper rate of 0 hits in 500 queries, by hand
    rate = (9 / 1000 + 3 * math.sqrt(9 / (4 * 500**2))) / (1 + 9 / 500)
    assert binomial_tail(k + 1, 100, rate) <= 0.05 < binomial_tail(k, 100, rate)
    assert decision_threshold([0.0] * 5) == 0.0  # no key size: the observed value
    with pytest.raises(ValueError):
        decision_threshold([], 0.05)
    with pytest.raises(ValueError):
        decision_threshold([0.1], 1.5)


# -- the job and its cache ----------------------------------------------------------------------
def test_threshold_job_caches_its_record_and_reuses_its_null_models(tmp_path) -> None:
    trains: list[str] = []

    def count(event: Any) -> None:
        if isinstance(event, Phase) and event.name == "train" and event.status == "start":
            trains.append(event.info["run"])

    first = run(dataclass_out(threshold_spec("abstract", key_size=40), tmp_path / "a"), count)
    record = first.summary["record"]
    assert first.summary["null_models_trained"] == 2 and len(trains) == 2
    assert len(record["null_key_acc"]) == 2 and record["samples"] == 40
    assert record["threshold"] == pytest.approx(
        decision_threshold(record["null_key_acc"], 0.05, key_size=40)
    )
    saved = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert saved["record"] == record
    folders = null_folders()
    assert len(folders) == 2
    # a second scheme on the same recipe trains nothing
    second = run(threshold_spec("pattern", keys=2), count)
    assert second.summary["null_models_trained"] == 0 and len(trains) == 2
    assert null_folders() == folders
    assert len(second.summary["record"]["null_key_acc"]) == 4
    # another seed range is another null model
    run(threshold_spec("pattern", null_seed=101), count)
    assert len(trains) == 3 and len(null_folders()) == 3


def dataclass_out(spec: JobSpec, out: Path) -> JobSpec:
    spec.out = out
    return spec


def test_find_threshold_is_keyed_by_dataset_arch_scheme_and_key_size() -> None:
    assert find_threshold("synthetic", "lenet5", "abstract", 30) is None
    run(threshold_spec("abstract", key_size=30))
    found = find_threshold("synthetic", "lenet5", "abstract", 30)
    assert found is not None and found.scheme == "abstract" and found.key_size == 30
    assert found.null_models == 2 and 0.0 <= found.threshold <= 1.0
    assert found.to_dict()["null_key_acc"] == found.null_key_acc
    for other in (
        ("synthetic", "lenet5", "abstract", 100),
        ("synthetic", "digit-cnn", "abstract", 30),
        ("synthetic", "lenet5", "unrelated", 30),
        ("mnist", "lenet5", "abstract", 30),
    ):
        assert find_threshold(*other) is None
    path = record_path("synthetic", "lenet5", "abstract", 30)
    path.write_text("{not json")
    assert find_threshold("synthetic", "lenet5", "abstract", 30) is None  # never a verdict


def test_null_model_training_stops_within_two_seconds() -> None:
    spec = JobSpec(
        "threshold",
        params={"scheme": "pattern", "null_models": 2},
        config={**TINY, "epochs": 500, "eval_every": 2},
    )
    seen = threading.Event()
    running = start(spec, lambda e: seen.set() if isinstance(e, Metrics) else None)
    assert seen.wait(60)
    began = time.monotonic()
    assert running.stop(2.0)
    assert time.monotonic() - began < 2.0
    assert running.result().status == "stopped"
    assert find_threshold("synthetic", "lenet5", "pattern", 0) is None


def test_a_scenario_phase_computes_the_threshold_of_its_embedded_run(tmp_path) -> None:
    raw = {
        "title": "tiny",
        "train": {**TINY, "train_size": 512, "epochs": 3, "optimizer": "adam", "lr": 0.003},
        "phases": [
            {"name": "owner", "kind": "embed", "scheme": "abstract", "params": {"count": 30}},
            {"name": "line", "kind": "threshold", "params": {"null_models": 2}},
        ],
    }
    scenario = scenario_from_mapping(raw, name="tiny")
    job, root, sinks = prepare_scenario(scenario, scenario.config(), tmp_path / "sc")
    session = Session(job, [root.event_sink(), *sinks]).start()
    errors = [e for e in session.events() if e.kind == "error"]
    assert session.status == "completed", errors
    summary = RunDir(tmp_path / "sc" / "02-line").summary()
    assert summary["record"]["scheme"] == "abstract" and summary["record"]["key_size"] == 30
    # the embedded model's own key against the line, as verify measures it
    verdict = verify_run(tmp_path / "sc" / "01-owner")
    assert summary["key_acc"] == pytest.approx(verdict["retention"])
    assert summary["threshold_verified"] == (verdict["retention"] > summary["threshold"])


def test_verify_reports_the_threshold_verdict_beside_its_p_value(pattern_run: Path) -> None:
    before = verify_run(pattern_run)
    assert before["threshold_verified"] is None and before["sok_threshold"] is None
    assert "wmtui threshold --scheme pattern --dataset synthetic" in before["threshold_hint"]
    # null models on the owner's recipe (one epoch: cheap), read from the run itself
    line = run(
        JobSpec("threshold", params={"null_models": 2}, config={"epochs": 1}, source=pattern_run)
    )
    assert line.summary["record"]["scheme"] == "pattern"
    after = verify_run(pattern_run)
    assert after["sok_threshold"] == pytest.approx(line.summary["threshold"])
    assert after["threshold_key_acc"] == pytest.approx(after["retention"])
    assert after["threshold_verified"] == (after["retention"] > after["sok_threshold"])
    assert after["threshold_verified"] is True  # the owner's own key is learnt
    assert after["verified"] == before["verified"]  # the decision stays on the p-value


def test_null_arch_trains_the_null_models_with_other_architectures() -> None:
    line = run(threshold_spec("abstract", null_arch="lenet5,digit-cnn"))
    models = [
        RunDir(path).manifest()["config"]["model"] for path in line.summary["null_model_runs"]
    ]
    assert models == ["lenet5", "digit-cnn"]
    assert line.summary["record"]["null_archs"] == ["lenet5", "digit-cnn"]
    # the record is the target architecture's: the model a verdict is asked about
    assert find_threshold("synthetic", "lenet5", "abstract", 100) is not None
