"""Sweeps without the CLI: grid files and their checks, trial keys, the local backend (two
worker processes), failed trials retried, and the Ray backend on a private local Ray."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigError, RunError
from engine.studies.sweep_backends import run_sweep
from engine.studies.sweep_results import (
    RESULTS_CSV,
    RESULTS_JSONL,
    SUMMARY,
    SweepResults,
    read_rows,
)
from engine.studies.sweep_trial import payload, run_payload
from engine.studies.sweeps import (
    TRIALS,
    SweepPlan,
    grid_from_mapping,
    load_grid,
    plan_sweep,
)

TINY_TRAIN = {
    "dataset": "synthetic",
    "train_size": 256,
    "test_size": 128,
    "epochs": 1,
    "model": "lenet5",
    "optimizer": "adam",
    "lr": 0.003,
    "device": "cpu",
}


def tiny_grid(**changes: Any) -> dict[str, Any]:
    """Two seeds x two targets of a pattern embedding and an FT-Basic attack: seconds."""
    raw: dict[str, Any] = {
        "train": dict(TINY_TRAIN),
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
        "axes": {"seed": [0, 1], "target": [3, 7]},
    }
    raw.update(changes)
    return raw


def metrics_of(out: Path) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each trial's status and metrics (seconds left out, an attack's cost time too: they
    differ between runs)."""
    return {r["trial"]: (r["status"], timeless(r["metrics"])) for r in read_rows(out)}


def timeless(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if not k.endswith(".cost.seconds")}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("sweep-data"))


@pytest.fixture(scope="module")
def local_run(tmp_path_factory: pytest.TempPathFactory, data_dir: str) -> Path:
    """The tiny grid through the local backend, two workers."""
    out = tmp_path_factory.mktemp("sweeps") / "local"
    grid = grid_from_mapping(tiny_grid(), "tiny")
    events: list[Any] = []
    outcome = run_sweep(
        plan_sweep(grid, out, {"data_dir": data_dir}), "local", 2, None, None, events.append
    )
    assert outcome.status == "completed", outcome.summary
    assert [e.kind for e in events].count("completed") == 4
    return out


# -- grids ----------------------------------------------------------------------------------
def test_axes_zip_exclude_and_dotted_targets_resolve_into_each_trial() -> None:
    raw = tiny_grid(
        axes={"seed": [0, 1], "phases.ftb.budget.data_fraction": [0.2, 0.5]},
        zip=[{"target": [3, 7], "train.epochs": [1, 2]}],
        exclude=[{"seed": 1, "target": 7}],
    )
    grid = grid_from_mapping(raw, "g")
    assert grid.axis_names == ["seed", "phases.ftb.budget.data_fraction", "target", "train.epochs"]
    assert len(grid.trials) == 2 * 2 * 2 - 2
    trial = next(t for t in grid.trials if t.point["target"] == 7)
    assert trial.config.seed == 0 and trial.config.epochs == 2
    embed, ftb = trial.scenario.phases
    assert embed.params["target_label"] == 7  # "{target}" keeps the integer
    assert ftb.budget == {
        "data_fraction": trial.point["phases.ftb.budget.data_fraction"],
        "epochs": 1,
    }
    assert len({t.key for t in grid.trials}) == len(grid.trials)


def test_a_trials_key_ignores_device_and_data_dir_but_not_any_value() -> None:
    keys = [t.key for t in grid_from_mapping(tiny_grid(), "a").trials]
    moved = tiny_grid(train={**TINY_TRAIN, "device": "cuda", "data_dir": "/elsewhere"})
    assert [t.key for t in grid_from_mapping(moved, "b").trials] == keys
    plan = plan_sweep(grid_from_mapping(tiny_grid(), "a"), Path("x"), {"device": "auto"})
    assert [t.key for t in plan.trials] == keys and plan.trials[0].config.device == "auto"
    changed = tiny_grid(train={**TINY_TRAIN, "lr": 0.004})
    assert not set(keys) & {t.key for t in grid_from_mapping(changed, "c").trials}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"axes": {"seed": [0], "target": [3], "train.epoch": [1]}}, "did you mean 'train.epochs'"),
        (
            {"axes": {"target": [3], "phases.ftb.budget.data_fractoin": [0.1]}},
            "did you mean 'phases.ftb.budget.data_fraction'",
        ),
        ({"axes": {"target": [3], "phases.ftx.params.lr": [0.1]}}, "did you mean 'phases.ftb"),
        ({"axes": {"target": [3], "phases.ftb.params.lrr": [0.1]}}, "'phases.ftb.params.lr'"),
        ({"axes": {"seed": [], "target": [3]}}, "axis 'seed' must be a non-empty list"),
        ({"axes": {"traget": [3]}}, "\"{target}\" is not an axis (did you mean 'traget'?)"),
        ({"axes": {"target": [3], "unused": [1]}}, "axis 'unused' is used nowhere"),
        (
            {"axes": {"target": [3]}, "zip": [{"seed": [0, 1], "train.lr": [0.1]}]},
            "equal lengths (seed has 2, train.lr has 1)",
        ),
        ({"axes": {"target": [3], "seed": [0]}, "exclude": [{"seeed": 1}]}, "did you mean 'seed'"),
        ({"axes": {"target": [3]}, "exlude": []}, "unknown key 'exlude'"),
        ({"axes": {"target": [3], "phases.ftb.params.lr": [0.1, -1.0]}}, "trial target=3 phases"),
        ({"axes": {"target": [3, 11], "seed": [0]}, "exclude": [{"seed": 0}]}, "leave no trial"),
    ],
)
def test_bad_grids_fail_on_reading_with_one_line(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        grid_from_mapping(tiny_grid(**changes), "bad", "bad.toml")
    text = str(caught.value)
    assert message in text and "\n" not in text and text.startswith("bad.toml")


def test_an_unknown_plugin_parameter_is_named_with_its_closest_name() -> None:
    raw = tiny_grid()
    raw["phases"][0]["params"]["triger"] = "square"
    with pytest.raises(ConfigError) as caught:
        grid_from_mapping(raw, "bad", "bad.toml")
    assert "embed params (pattern): key 'triger'" in str(caught.value)  # a TOML key, no flag
    assert "(did you mean 'trigger'?)" in str(caught.value)


def test_the_example_grids_load() -> None:
    assert len(load_grid("minimal").trials) == 4
    refit = load_grid("refit")
    assert len(refit.trials) == 54 and refit.seed_axes == ["seed"]
    attacks = {t.scenario.phases[1].plugin for t in refit.trials}
    assert attacks == {"ft-basic", "ftau", "finetune"}
    assert all((t.point["attack"] == "ftau") == bool(t.point["unlabeled"]) for t in refit.trials)
    detection = load_grid("detection")
    assert len(detection.trials) == 18
    assert [p.kind for p in detection.trials[0].scenario.phases] == ["embed", "detect"]


# -- the local backend ----------------------------------------------------------------------
def test_local_sweep_writes_a_run_folder_per_trial_and_the_results(local_run: Path) -> None:
    rows = read_rows(local_run)
    assert len(rows) == 4 and all(r["status"] == "completed" for r in rows)
    for row in rows:
        trial = local_run / TRIALS / row["trial"]
        assert (trial / "01-embed" / "model.safetensors").is_file()
        assert json.loads((trial / "summary.json").read_text())["status"] == "completed"
        assert 0.0 <= row["metrics"]["ftb.retention.key"] <= 1.0
        assert set(row["metrics"]) >= {"embed.test_acc", "ftb.test_acc", "ftb.test_acc_before"}
    header = (local_run / RESULTS_CSV).read_text().splitlines()[0].split(",")
    assert header[:5] == ["trial", "seed", "target", "status", "seconds"]
    # the attack's SoK verdict and cost (unknown here: no threshold was computed)
    sok = ["ftb.removed", "ftb.kept_accuracy", "ftb.wm_accuracy", "ftb.cost.images"]
    assert set(header) >= {*sok, "ftb.cost.seconds", "ftb.cost.labels", "ftb.cost.queries"}
    for row in rows:
        metrics = row["metrics"]
        assert metrics["ftb.removed"] is None and metrics["ftb.cost.queries"] == 0
        assert metrics["ftb.kept_accuracy"] == metrics["ftb.test_acc"]
        assert metrics["ftb.wm_accuracy"] == metrics["ftb.retention.key"]
    summary = json.loads((local_run / SUMMARY).read_text())
    assert summary["group_by"] == ["target"] and summary["complete"]
    by_target = {c["point"]["target"]: c for c in summary["configs"]}
    assert by_target[3]["n"] == 2 and by_target[3]["seeds"] == [[0], [1]]
    values = [r["metrics"]["embed.test_acc"] for r in rows if r["point"]["target"] == 3]
    stats = by_target[3]["metrics"]["embed.test_acc"]
    assert stats["mean"] == pytest.approx(sum(values) / 2)


def test_a_second_run_keeps_every_completed_trial(local_run: Path, data_dir: str) -> None:
    before = {p: p.stat().st_mtime_ns for p in local_run.glob(f"{TRIALS}/*/summary.json")}
    grid = grid_from_mapping(tiny_grid(), "tiny")
    events: list[Any] = []
    outcome = run_sweep(plan_sweep(grid, local_run, {"data_dir": data_dir}), listener=events.append)
    assert outcome.status == "completed"
    assert {e.kind for e in events} == {"kept"}
    assert {p: p.stat().st_mtime_ns for p in before} == before


def test_a_failed_trial_is_a_row_with_its_error_and_is_not_kept(
    tmp_path: Path, data_dir: str
) -> None:
    """Run in this process (what a worker does with it): the row says why, and the next
    sweep runs the trial again instead of keeping it."""
    raw = tiny_grid(axes={"target": [11]})  # the synthetic digits have 10 classes
    grid = grid_from_mapping(raw, "fails")
    with pytest.raises(ConfigError, match="10 classes"):  # planning refuses it before it runs
        plan_sweep(grid, tmp_path / "out", {"data_dir": data_dir})
    # a worker handed it all the same fails the trial, in its row
    trials = [
        dataclasses.replace(t, config=t.config.replace(data_dir=data_dir)) for t in grid.trials
    ]
    plan = SweepPlan(grid, trials, tmp_path / "out")
    row = run_payload(payload(plan, plan.trials[0], 1))
    assert row["status"] == "failed" and "10 classes" in row["error"]
    assert row["trial"] == plan.trials[0].key and row["metrics"] == {}
    assert SweepResults(plan).read_folders() == []


def test_an_unknown_backend_and_a_foreign_folder_are_refused(tmp_path: Path) -> None:
    plan = plan_sweep(grid_from_mapping(tiny_grid(), "tiny"), tmp_path)
    with pytest.raises(ConfigError, match="unknown backend 'rey' \\(did you mean 'ray'\\?\\)"):
        run_sweep(plan, "rey")
    (tmp_path / "manifest.json").write_text(json.dumps({"command": "train", "config": {}}))
    with pytest.raises(Exception, match="holds a train run, not a sweep"):
        run_sweep(plan)


# -- the Ray backend ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray() -> Any:
    """A private Ray for the test: 2 CPUs, token auth off (it listens on the loopback only),
    its temp folder short (socket paths) and removed afterwards."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.tune")
    saved = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp = tempfile.mkdtemp(prefix="wr-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _temp_dir=temp,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
        if saved is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = saved


def test_ray_sweep_gives_the_local_backends_results(
    local_ray: Any, local_run: Path, tmp_path: Path, data_dir: str
) -> None:
    grid = grid_from_mapping(tiny_grid(), "tiny")
    plan = plan_sweep(grid, tmp_path / "ray", {"data_dir": data_dir})
    events: list[Any] = []
    outcome = run_sweep(plan, "ray", workers=2, listener=events.append)
    assert outcome.status == "completed", outcome.summary
    assert metrics_of(plan.out) == metrics_of(local_run)
    assert [e.kind for e in events if e.trial].count("completed") == 4
    assert (plan.out / "ray").is_dir() and (plan.out / RESULTS_JSONL).is_file()
    again: list[Any] = []
    assert run_sweep(plan, "ray", listener=again.append).status == "completed"
    assert {e.kind for e in again if e.trial} == {"kept"}  # nothing reaches Ray

    # a trial whose folder lost its summary: Tune's restored experiment counts it finished,
    # so it runs again in a new experiment beside it
    lost = read_rows(plan.out)[1]["trial"]
    (plan.out / TRIALS / lost / "summary.json").unlink()
    notes: list[Any] = []
    assert run_sweep(plan, "ray", workers=2, listener=notes.append).status == "completed"
    assert [(e.kind, e.trial.key) for e in notes if e.kind in ("started", "completed")] == [
        ("started", lost),
        ("completed", lost),
    ]
    messages = " / ".join(e.message for e in notes if e.kind == "note")
    assert "restoring experiment" in messages and "1 trial(s) left over" in messages
    assert metrics_of(plan.out) == metrics_of(local_run)


def test_a_ray_sweep_after_a_ray_was_shut_down_in_this_process_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ray Tune's trials never start on a second Ray in one process (they all failed): the
    sweep is refused before it starts, saying why and what to do."""
    pytest.importorskip("ray")
    from engine.studies import sweep_ray

    monkeypatch.setattr(sweep_ray, "_SHUT_DOWN", [True])
    plan = plan_sweep(grid_from_mapping(tiny_grid(), "tiny"), tmp_path / "s")
    with pytest.raises(RunError, match="a Ray was shut down earlier in this process"):
        run_sweep(plan, "ray", workers=2)
    assert not (plan.out / "trials").exists()  # no trial ran
