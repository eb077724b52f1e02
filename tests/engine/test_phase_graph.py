"""Recipes as graphs of phases: each phase keyed by what it depends on and computed once,
on local worker processes or Ray, resumed at phase granularity after a SIGKILL, and shared
between recipes through one cache."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.config import TrainConfig
from engine.session import JobContext
from engine.studies.phase_graph import phase_key
from engine.studies.recipe_file import load_recipe, recipe_from_mapping
from engine.studies.recipe_workers import RunOptions, Scheduler
from engine.studies.recipes import plan
from engine.studies.scenario_runner import PhaseRouter
from wmtui.cli.main import app

runner = CliRunner()

MATRIX = """
title = "matrix"
paper = "Nobody et al."
source = "Table 0"

[train]
dataset = "synthetic"
train_size = 192
test_size = 64
batch_size = 32
epochs = 2
optimizer = "adam"
lr = 0.003
device = "cpu"

[scales.quick]
minutes = 1

[[arms]]
name = "m"
grid = { scheme = SCHEMES, attack = ATTACKS, seed = [0, 1] }

[[arms.phases]]
name = "embed"
kind = "embed"
scheme = "{scheme}"

[[arms.phases]]
name = "attack"
kind = "attack"
attack = "{attack}"
on = "embed"
budget = { data_fraction = 0.25, epochs = 1 }

[[cells]]
name = "accuracy change"
phase = "attack"
metric = "test_acc"
base = "test_acc_before"
unit = "%"

[[cells]]
name = "accuracy after"
phase = "attack"
metric = "test_acc"
unit = "%"
"""
SCHEMES = ["pattern", "uchida"]
ATTACKS = ["ft-basic", "prune", "weight-quantization"]


def matrix_text(schemes: list[str] = SCHEMES, attacks: list[str] = ATTACKS) -> str:
    return MATRIX.replace("SCHEMES", json.dumps(schemes)).replace("ATTACKS", json.dumps(attacks))


@pytest.fixture(scope="module")
def matrix_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("matrix") / "matrix.toml"
    path.write_text(matrix_text())
    return path


def reproduce(*args: str) -> dict[str, Any]:
    """Run ``wmtui reproduce`` here; the recipe's result (it must have completed)."""
    result = runner.invoke(app, ["reproduce", *args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    out = Path(args[args.index("--out") + 1])
    return json.loads((out / "recipe.json").read_text())


def values(result: dict[str, Any]) -> dict[str, list[float]]:
    return {cell["name"]: cell["values"] for cell in result["cells"]}


def completed_summaries(cache: Path) -> dict[Path, int]:
    """Each phase folder that completed -> its summary's mtime (a rerun would rewrite it)."""
    found = {}
    for folder in cache.iterdir():
        summary = folder / "summary.json"
        try:
            if json.loads(summary.read_text()).get("status") == "completed":
                found[folder] = summary.stat().st_mtime_ns
        except (OSError, ValueError):
            continue
    return found


@pytest.fixture(scope="module")
def local(matrix_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("local") / "out"
    return out, reproduce(str(matrix_file), "--out", str(out), "--workers", "2")


# -- keys ---------------------------------------------------------------------------------
def test_a_phase_key_follows_what_the_output_depends_on_and_nothing_else(
    matrix_file: Path, tmp_path: Path
) -> None:
    run = plan(load_recipe(str(matrix_file)), "quick", tmp_path / "out")
    graph = run.graph()
    embeds = [n for n in graph.nodes.values() if n.spec.kind == "embed"]
    assert len(run.trials) == 12 and graph.uses == 24
    assert len(embeds) == 4 and len(graph.nodes) == 16  # 2 schemes x 2 seeds, + 12 attacks
    by_embed: dict[str, set[tuple[str, int]]] = {}
    for trial in run.trials:
        key = graph.trials[trial.folder_name]["embed"]
        by_embed.setdefault(key, set()).add((trial.point["scheme"], trial.point["seed"]))
    assert all(len(points) == 1 for points in by_embed.values())  # one (scheme, seed) each
    embed = embeds[0]
    where = embed.config.to_dict() | {"device": "cuda", "data_dir": str(tmp_path)}
    assert phase_key(embed.spec, TrainConfig.from_mapping(where), None) == embed.key
    other = TrainConfig.from_mapping(embed.config.to_dict() | {"lr": 0.01})
    assert phase_key(embed.spec, other, None) != embed.key
    attack = next(n for n in graph.nodes.values() if n.input == embed.key)
    assert phase_key(attack.spec, attack.config, "another-embedding") != attack.key


def test_a_threshold_phase_runs_before_the_later_phases_that_read_its_record(
    tmp_path: Path,
) -> None:
    raw = tomllib.loads(matrix_text(["pattern"], ["prune", "ft-basic"]))
    phases = raw["arms"][0]["phases"]
    threshold = {"name": "threshold", "kind": "threshold", "on": "embed"}
    phases.insert(1, threshold | {"params": {"scheme": "pattern", "null_models": 2}})
    run = plan(recipe_from_mapping(raw, "ordered"), "quick", tmp_path / "out")
    graph = run.graph()
    kinds = Counter(n.spec.kind for n in graph.nodes.values())
    assert kinds == {"embed": 2, "threshold": 2, "attack": 4}  # per seed; shared by attacks
    scheduler = Scheduler(JobContext(), graph, RunOptions(), PhaseRouter(), print)
    state = scheduler.state  # nothing done yet
    for node in graph.nodes.values():
        if node.spec.kind == "attack":
            (before,) = node.after
            assert graph.nodes[before].spec.kind == "threshold"
            assert graph.nodes[before].input == node.input  # the same embedding's
        if node.spec.kind == "embed":
            state.status[node.key] = "kept"
    assert {n.spec.kind for n in scheduler.ready()} == {"threshold"}  # not yet the attacks
    for node in graph.nodes.values():
        if node.spec.kind == "threshold":
            state.status[node.key] = "failed"
            assert {graph.nodes[k].spec.kind for k in graph.dependents(node.key)} == {"attack"}


# -- computed once, on workers ---------------------------------------------------------------
def test_a_2x3x2_matrix_trains_4_embeddings_not_12(local: tuple[Path, dict]) -> None:
    out, result = local
    cache = out / "phases"
    assert len(list(cache.glob("embed-*"))) == 4
    assert len(list(cache.glob("attack-*"))) == 12
    phases = result["phases"]
    assert (phases["total"], phases["in_trials"], phases["ran"], phases["kept"]) == (16, 24, 16, 0)
    assert result["complete"] and all(len(v) == 12 for v in values(result).values())
    embeds: dict[tuple[str, int], set[Path]] = {}
    for trial in result["trials"]:
        point = trial["params"]
        folder = (out / trial["run"] / "01-embed").resolve()
        assert folder.parent == cache.resolve() and (folder / "model.safetensors").is_file()
        assert (out / trial["phases"]["embed"]).resolve() == folder
        embeds.setdefault((point["scheme"], point["seed"]), set()).add(folder)
    assert len(embeds) == 4 and all(len(f) == 1 for f in embeds.values())  # 3 attacks share it


def test_another_recipe_with_the_same_cache_runs_nothing_already_computed(
    local: tuple[Path, dict], tmp_path: Path
) -> None:
    out, first = local
    subset = tmp_path / "subset.toml"
    subset.write_text(matrix_text(["uchida"], ["prune"]).replace('"matrix"', '"a subset"'))
    before = completed_summaries(out / "phases")
    result = reproduce(str(subset), "--out", str(tmp_path / "out"), "--cache", str(out / "phases"))
    assert (result["phases"]["total"], result["phases"]["ran"], result["phases"]["kept"]) == (
        4,
        0,
        4,
    )
    assert completed_summaries(out / "phases") == before
    assert not (tmp_path / "out" / "phases").exists()
    wanted = [
        value
        for trial, value in zip(first["trials"], first["cells"][0]["values"], strict=True)
        if trial["params"]["scheme"] == "uchida" and trial["params"]["attack"] == "prune"
    ]
    assert sorted(result["cells"][0]["values"]) == sorted(wanted)


SWEEP = """
[train]
dataset = "synthetic"
train_size = 192
test_size = 64
batch_size = 32
epochs = 2
optimizer = "adam"
lr = 0.003
device = "cpu"

[[phases]]
name = "embed"
kind = "embed"
scheme = "uchida"

[[phases]]
name = "attack"
kind = "attack"
attack = "prune"
on = "embed"
budget = { data_fraction = 0.25, epochs = 1 }

[axes]
seed = [0, 1, 2]
"""


def test_a_sweep_given_the_recipes_cache_runs_only_its_new_phases(
    local: tuple[Path, dict], tmp_path: Path
) -> None:
    from engine.studies.sweep_trial import payload, run_payload
    from engine.studies.sweeps import grid_from_mapping, plan_sweep

    out, first = local
    cache = out / "phases"
    before = completed_summaries(cache)
    grid = grid_from_mapping(__import__("tomllib").loads(SWEEP), "shared")
    sweep = plan_sweep(grid, tmp_path / "sweep", cache=cache)
    rows = {t.point["seed"]: run_payload(payload(sweep, t, 1)) for t in sweep.trials}
    assert all(row["status"] == "completed" for row in rows.values())
    after = completed_summaries(cache)
    assert {p: t for p, t in after.items() if p in before} == before  # seeds 0, 1: kept
    assert len(after) == len(before) + 2  # seed 2: its embedding and its attack, once
    recipe = {
        trial["params"]["seed"]: value / 100
        for trial, value in zip(first["trials"], first["cells"][1]["values"], strict=True)
        if trial["params"]["scheme"] == "uchida" and trial["params"]["attack"] == "prune"
    }
    for seed in (0, 1):
        assert rows[seed]["metrics"]["attack.test_acc"] == pytest.approx(recipe[seed])
        link = tmp_path / "sweep" / rows[seed]["run"] / "01-embed"
        assert link.resolve().parent == cache.resolve()


def test_a_trial_folder_from_before_the_cache_is_moved_into_it_not_run_again(
    matrix_file: Path, local: tuple[Path, dict], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    shutil.copytree(local[0], out, symlinks=True)
    trial = out / local[1]["trials"][0]["run"]
    for link in sorted(trial.glob("0*-*")):  # the layout of old runs: real phase folders
        target = link.resolve()
        link.unlink()
        shutil.move(str(target), str(link))
    summary = trial / "02-attack" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    result = reproduce(str(matrix_file), "--out", str(out))
    assert (result["phases"]["ran"], result["phases"]["kept"]) == (0, 16)
    assert (trial / "02-attack").is_symlink() and (trial / "02-attack").resolve().is_dir()
    assert (trial / "02-attack" / "summary.json").stat().st_mtime_ns == stamp
    assert values(result) == values(local[1])


# -- SIGKILL, then resume ---------------------------------------------------------------------
def test_killing_the_driver_and_resuming_reruns_no_finished_phase(
    matrix_file: Path, local: tuple[Path, dict], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "wmtui", "reproduce", str(matrix_file), "--out", str(out)]
    driver = subprocess.Popen(
        [*command, "--threads", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    while not list((out / "phases").glob("*/phase.json")) and time.monotonic() < deadline:
        assert driver.poll() is None, driver.stderr.read().decode() if driver.stderr else ""
        time.sleep(0.05)
    driver.send_signal(signal.SIGKILL)
    driver.wait(10)
    done = completed_summaries(out / "phases")
    assert 1 <= len(done) < 16, "the kill came too late to test anything"
    result = reproduce(str(matrix_file), "--out", str(out))
    assert {p: t for p, t in completed_summaries(out / "phases").items() if p in done} == done
    phases = result["phases"]
    assert phases["kept"] == len(done) and phases["ran"] == 16 - len(done)
    assert values(result) == values(local[1])  # the same seeds: the same table


# -- Ray --------------------------------------------------------------------------------------
def test_ray_gives_the_same_table_as_local_workers(
    matrix_file: Path, local: tuple[Path, dict], tmp_path: Path
) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "out"
    # its own process, as a user runs it: a private Ray started and shut down inside this test
    # process leaves Ray's module state behind, and a later Ray Tune sweep's actors then die
    command = [sys.executable, "-m", "wmtui", "reproduce", str(matrix_file), "--out", str(out)]
    command += ["--backend", "ray", "--workers", "2", "--threads", "1"]
    done = subprocess.run(
        command,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((out / "recipe.json").read_text())
    assert result["phases"]["ran"] == 16 and len(list((out / "phases").glob("embed-*"))) == 4
    assert values(result) == values(local[1])


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--address", "head:6379"], "--address names a Ray cluster: it needs --backend ray"),
        (["--backend", "slurm"], "unknown backend 'slurm'; choose one of: local, ray"),
    ],
)
def test_bad_worker_options_are_one_line_and_exit_2(
    matrix_file: Path, args: list[str], message: str, tmp_path: Path
) -> None:
    out = tmp_path / "o"
    result = runner.invoke(app, ["reproduce", str(matrix_file), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()
