"""The extraction attacks retraining, cross-retraining, smooth-retraining and ensemble, run as
attack jobs on the session's ``pattern_run`` (a LeNet-5 on synthetic digits): the query cap
and its count, the answers' kind, the stolen model's agreement with the suspect, the
ensemble's run folder, the perturbed queries, bad input and Stop."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from engine.attacks import AttackEnv, AttackerBudget, TrainReport, build_attacker_data, make_attack
from engine.attacks.queries import QueryCounter
from engine.data import load_dataset
from engine.data.base import as_float
from engine.events import Phase
from engine.jobs import JobSpec, run, start
from engine.models.ensemble import Ensemble
from engine.runs import load_model
from engine.session import JobContext
from wmtui.cli import app
from wmtui.cli import attacks as cli_attacks

cli_attacks.register(app)
runner = CliRunner()
SMALL_TRAIN, SMALL_TEST = 1024, 256  # the pattern run's synthetic set (tests/conftest.py)


def attack_job(source: Path, name: str, out: Path | None = None, **values: Any):
    spec = JobSpec.attack(name, run=source, device="cpu", eval_every=10**6, out=out, **values)
    return run(spec)


class Recorder:
    """An attack environment whose training only records what it was handed."""

    def __init__(self, cap: int = 0) -> None:
        self.calls: list[tuple[nn.Module, list[Any], int]] = []
        self.env = AttackEnv(
            JobContext(lambda event: None),
            torch.device("cpu"),
            0,
            self.train,
            queries=QueryCounter(cap),
        )

    def train(self, model: nn.Module, sources: list[Any], settings: Any, *, steps: int, **_):
        self.calls.append((model, sources, steps))
        return TrainReport(steps, 0.0)


def attacker(budget: dict[str, Any], shared_data_dir: Path):
    data = load_dataset(
        "synthetic", shared_data_dir, train_size=SMALL_TRAIN, test_size=SMALL_TEST
    ).data
    return data, build_attacker_data(AttackerBudget.from_mapping(budget), data, seed=0)


# -- the query budget ------------------------------------------------------------------------
def test_a_query_cap_answers_exactly_that_many_and_the_cost_says_so(pattern_run) -> None:
    capped = attack_job(pattern_run, "retraining", data_fraction=0.2, queries=50, steps=2)
    assert capped.status == "completed"
    assert capped.summary["cost"]["queries"] == capped.summary["info"]["queries"] == 50
    # a cap above the transfer set answers the whole set, as no cap at all does
    labelled = round(0.2 * SMALL_TRAIN)
    for cap in ({"queries": 10_000}, {}):
        whole = attack_job(pattern_run, "retraining", data_fraction=0.2, steps=1, **cap)
        assert abs(whole.summary["cost"]["queries"] - labelled) <= 1
        assert whole.summary["cost"]["queries"] == whole.summary["labeled_images"]


def test_asking_past_the_cap_stops_the_job_with_the_reason(pattern_run, tmp_path) -> None:
    # three perturbed copies an image: a cap of 2 cannot answer one whole image
    out = tmp_path / "stopped"
    result = attack_job(
        pattern_run, "smooth-retraining", out, data_fraction=0.1, queries=2, steps=1
    )
    assert result.status == "stopped"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and "query budget spent" in summary["reason"]
    assert summary["cost"]["queries"] == 0  # nothing past the cap was answered


def test_smooth_retraining_spends_its_copies_per_image_within_the_cap(
    pattern_run, shared_data_dir
) -> None:
    _, data = attacker({"data_fraction": 0.2, "queries": 100, "steps": 1}, shared_data_dir)
    victim, arch = load_model(pattern_run)
    rec = Recorder(cap=100)
    attack = make_attack("smooth-retraining", {"copies": 3})
    assert attack.planned_steps(data) == 1
    result = attack.run(victim, arch, data, rec.env)
    ((_, (source,), _),) = rec.calls
    assert len(source.x) == 33 == result.info["images"]  # 33 whole images of 3 queries each
    assert rec.env.queries.count == 99 == result.info["queries"]


# -- what the suspect answers ----------------------------------------------------------------
@pytest.mark.parametrize("answers", ["labels", "probs"])
def test_the_student_learns_from_the_answers_the_budget_allows(
    pattern_run, shared_data_dir, answers
) -> None:
    _, data = attacker({"data_fraction": 0.1, "answers": answers}, shared_data_dir)
    victim, arch = load_model(pattern_run)
    rec = Recorder()
    result = make_attack("retraining").run(victim, arch, data, rec.env)
    ((student, (source,), steps),) = rec.calls
    with torch.no_grad():
        logits = victim(as_float(source.x))
    if answers == "labels":
        assert torch.equal(source.y, F.one_hot(logits.argmax(1), 10).float())
    else:
        assert torch.allclose(source.y, F.softmax(logits, 1), atol=1e-5)
        assert not torch.equal(source.y, source.y.round())  # soft, not one-hot
    assert torch.equal(source.x, data.labeled_x)  # the labelled images, their labels unused
    assert result.info == {
        "student": "lenet5",
        "queries": len(data.labeled_x),
        "answers": answers,
        "loss": 0.0,
    }
    assert steps == make_attack("retraining").planned_steps(data)
    assert student is result.model and student is not victim


def test_retraining_agrees_with_the_suspect_far_above_chance(pattern_run, tmp_path) -> None:
    out = tmp_path / "stolen"
    result = attack_job(pattern_run, "retraining", out, data_fraction=0.5, steps=150)
    stolen, arch = load_model(out)
    suspect, _ = load_model(pattern_run)
    assert arch.name == result.summary["model"] == "lenet5"
    test_x = load_dataset("synthetic", train_size=SMALL_TRAIN, test_size=SMALL_TEST).data.test_x
    with torch.no_grad():
        x = as_float(test_x)
        agreement = (stolen(x).argmax(1) == suspect(x).argmax(1)).float().mean().item()
    assert agreement > 0.4  # chance is about 0.1; measured 0.73
    assert result.summary["cost"]["labels"] == 0


def test_cross_retraining_steals_into_another_architecture(pattern_run, tmp_path) -> None:
    out = tmp_path / "cross"
    result = attack_job(pattern_run, "cross-retraining", out, data_fraction=0.1, steps=2)
    _, arch = load_model(out)
    assert arch.name == result.summary["model"] == result.summary["info"]["student"]
    assert arch.name != "lenet5" and arch.name == "digit-cnn"
    # a named student is taken as given, the suspect's own included (retraining, then)
    named = attack_job(
        pattern_run, "cross-retraining", data_fraction=0.1, steps=1, student="lenet5"
    )
    assert named.summary["model"] == "lenet5"


# -- the ensemble ----------------------------------------------------------------------------
def test_an_ensemble_is_saved_loaded_and_serves_its_members_mean(pattern_run, tmp_path) -> None:
    out = tmp_path / "ensemble"
    events: list[Any] = []
    spec = JobSpec.attack(
        "ensemble",
        run=pattern_run,
        device="cpu",
        eval_every=10**6,
        out=out,
        data_fraction=0.2,
        epochs=1,
    )
    result = run(spec, events.append)
    (planned,) = [
        e.info["steps"]
        for e in events
        if isinstance(e, Phase) and e.status == "start" and e.name == "ensemble"
    ]
    # about 205 answered images in three parts of 68, each one epoch of two batches of 64
    assert result.summary["steps"] == planned == 6
    loaded, arch = load_model(out)
    assert arch.name == result.summary["model"] == "ensemble-3-lenet5"
    assert isinstance(loaded, Ensemble) and len(loaded.members) == 3
    x = torch.rand(8, 1, 28, 28)
    with torch.no_grad():
        mean = torch.stack([F.softmax(m(x), 1) for m in loaded.members]).mean(0)
        served = loaded(x)
        first, second = loaded.members[0](x), loaded.members[1](x)
    assert torch.allclose(F.softmax(served, 1), mean, atol=1e-6)
    assert torch.allclose(served.exp(), mean, atol=1e-6)
    assert not torch.allclose(first, second)  # different parts, different seeds


def test_ensemble_members_train_on_disjoint_parts_with_smoothed_answers(
    pattern_run, shared_data_dir
) -> None:
    _, data = attacker({"data_fraction": 0.1, "steps": 1}, shared_data_dir)
    victim, arch = load_model(pattern_run)
    rec = Recorder()
    make_attack("ensemble", {"splits": 3, "epsilon": 0.2}).run(victim, arch, data, rec.env)
    parts = [sources[0] for _, sources, _ in rec.calls]
    assert len(parts) == 3 and sum(len(p.x) for p in parts) == len(data.labeled_x)
    rows = {tuple(row.flatten().tolist()) for p in parts for row in p.x}
    assert len(rows) == len(data.labeled_x)  # no image in two parts
    for part in parts:
        assert torch.allclose(part.y.sum(1), torch.ones(len(part.y)))
        assert float(part.y.min()) >= 0.2 / 10 - 1e-6  # eps / K: nothing sure of zero


# -- smooth retraining's queries -------------------------------------------------------------
def test_smooth_retraining_asks_perturbed_copies_and_trains_on_the_originals(
    pattern_run, shared_data_dir
) -> None:
    _, data = attacker({"data_fraction": 0.05, "steps": 1}, shared_data_dir)
    victim, arch = load_model(pattern_run)
    asked: list[torch.Tensor] = []
    victim.register_forward_pre_hook(lambda _m, inputs: asked.append(inputs[0].clone()))
    rec = Recorder()
    originals = as_float(data.labeled_x)
    n = len(originals)
    wrt = {"sigma": 0.0, "shift": 4, "flip": True}  # WRT's CIFAR-10 perturbation
    for params in ({}, wrt):
        asked.clear()
        make_attack("smooth-retraining", params).run(victim, arch, data, rec.env)
        queries = torch.cat(asked)
        assert len(queries) == 3 * n  # three copies an image, each one query
        same = [torch.equal(q, originals[i % n]) for i, q in enumerate(queries)]
        if params is wrt:  # shifts and flips alone leave about a copy in 160 untouched
            assert sum(same) <= len(queries) // 20
        else:  # with noise (the default), no query is an image the thief trains on
            assert not any(same)
        (_, (source,), _) = rec.calls[-1]
        assert torch.equal(source.x, data.labeled_x)  # trained on the clean images


# -- bad input, stop ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--attack", "retraining", "--queries", "-1"], "queries"),
        (["--attack", "retraining", "--queries", "0"], "queries must be > 0"),
        (["--attack", "retraining", "--unlabeled", "synthetc"], "did you mean 'synthetic'"),
        (["--attack", "ensemble", "--data-fraction", "0"], "--unlabeled"),
        (["--attack", "cross-retraining", "--student", "lenet"], "did you mean 'lenet5'"),
        (["--attack", "smooth-retraining", "--copies", "0"], "copies"),
        (["--attack", "ensemble", "--queries", "2"], "members"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(pattern_run, tmp_path, args, fragment):
    out = tmp_path / "never"
    result = runner.invoke(app, ["attack", *args, "--run", str(pattern_run), "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error:"), result.stderr
    assert fragment in lines[0]
    assert not out.exists()


def test_an_extraction_job_stops_within_two_seconds(pattern_run, tmp_path) -> None:
    out = tmp_path / "stop"
    spec = JobSpec.attack(
        "retraining",
        run=pattern_run,
        device="cpu",
        eval_every=10**6,
        out=out,
        data_fraction=0.2,
        steps=1_000_000,
    )
    running = start(spec)
    for event in running.events():
        if isinstance(event, Phase) and event.name == "retraining" and event.status == "start":
            break
    time.sleep(0.5)  # well into the training
    asked = time.monotonic()
    assert running.stop(timeout=2.0)
    assert time.monotonic() - asked < 2.0
    result = running.result()
    assert result.status == "stopped"
    assert json.loads((out / "summary.json").read_text())["status"] == "stopped"
