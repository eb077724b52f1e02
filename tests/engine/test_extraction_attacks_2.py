"""Knockoff Nets, Jacobian-based augmentation and transfer learning: each counts its queries
on the one counter, stops at the cap with its reason, and refuses a budget it cannot use in
one line before anything is written. Every model is a tiny LeNet-5 trained for a few steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from engine.attacks import ATTACKS, EXTRACTION, make_attack
from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.jacobian_augmentation import augment, step_size
from engine.attacks.knockoff import GradientBandit, kmeans_groups
from engine.attacks.queries import QueryCounter
from engine.attacks.registry import AttackEnv, TrainReport
from engine.attacks.transfer_learning import head_keys
from engine.jobs import JobSpec, run
from engine.models import Architecture, build_model
from engine.runs import RunDir, load_model, save_model
from engine.session import JobContext
from engine.training import TrainLoop
from wmtui.cli import app

ARCH = Architecture("lenet5", (1, 28, 28), 10)
runner = CliRunner()


def lenet(seed: int = 0, outputs: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(Architecture("lenet5", (1, 28, 28), outputs)).eval()


def images(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)


class Trainer:
    """The real loop behind ``env.train``, recording each model's weights as handed to it."""

    def __init__(self) -> None:
        self.handed: list[dict[str, torch.Tensor]] = []

    def __call__(self, model, sources, settings, *, steps, params=None) -> TrainReport:
        self.handed.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        loop = TrainLoop(
            model, sources, settings, ctx=JobContext(), phase="t", total_steps=steps, seed=0
        )
        result = loop.run()
        return TrainReport(result.steps, result.loss)


def env_with(cap: int = 0) -> tuple[AttackEnv, Trainer]:
    trainer = Trainer()
    env = AttackEnv(JobContext(), torch.device("cpu"), 0, trainer, queries=QueryCounter(cap))
    return env, trainer


def attacker(labeled: int = 0, pool: int = 0, **budget: Any) -> AttackerData:
    """The attacker's ``labeled`` images and a transfer set of ``pool`` noise images."""
    x = images(labeled, seed=1)
    y = torch.randint(0, 10, (labeled,), generator=torch.Generator().manual_seed(2))
    return AttackerData(
        AttackerBudget(**budget), x, y, images(pool, seed=3), (1, 28, 28), 10, seed=0
    )


def test_the_three_are_extraction_attacks() -> None:
    for name in ("knockoff", "jacobian-augmentation", "transfer-learning"):
        assert ATTACKS.get(name).family == EXTRACTION


# -- knockoff --------------------------------------------------------------------------------
def test_knockoff_on_noise_runs_as_a_job_and_counts_exactly_its_transfer_set(
    pattern_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "stolen"
    spec = JobSpec.attack(
        "knockoff",
        run=pattern_run,
        out=out,
        unlabeled="noise",
        unlabeled_count=300,
        data_fraction=0.05,
        steps=3,
        device="cpu",
    )
    summary = run(spec).summary
    assert summary["status"] == "completed"
    assert summary["cost"]["queries"] == 300 == summary["info"]["queries"]
    assert summary["cost"]["labels"] == 0  # the labelled fraction was never touched
    assert summary["info"]["student"] == "lenet5" and summary["steps"] == 3
    stolen, _ = load_model(out)
    suspect, _ = load_model(pattern_run)
    assert not torch.equal(stolen.features[0].weight, suspect.features[0].weight)


def test_the_bandit_prefers_the_group_that_pays() -> None:
    bandit = GradientBandit(3, lr=0.2)
    gen = torch.Generator().manual_seed(0)
    everything = torch.ones(3, dtype=torch.bool)
    draws = [0, 0, 0]
    for _ in range(300):
        g = bandit.draw(everything, gen)
        draws[g] += 1
        bandit.update(g, 1.0 if g == 1 else 0.0)
    assert draws[1] > draws[0] + draws[2]
    assert int(bandit.policy().argmax()) == 1
    # one update by hand: the chosen group gains lr*(r-b)*(1-pi), the others lose lr*(r-b)*pi
    fresh = GradientBandit(4, lr=0.5)
    fresh.update(2, 1.0)
    assert torch.allclose(fresh.prefs, torch.tensor([-0.125, -0.125, 0.375, -0.125]).double())
    # an exhausted group is never drawn
    only = torch.tensor([False, False, True, False])
    assert {fresh.draw(only, gen) for _ in range(20)} == {2}


def test_kmeans_groups_separate_dark_from_bright_images() -> None:
    x = torch.cat([torch.full((20, 1, 28, 28), 10, dtype=torch.uint8), images(20)])
    x[20:] = x[20:].clamp(min=200)
    groups = kmeans_groups(x, 2, seed=0)
    assert len(set(groups[:20].tolist())) == 1 and len(set(groups[20:].tolist())) == 1
    assert groups[0] != groups[20]


def test_adaptive_knockoff_stops_at_the_cap_and_trains_on_what_was_answered() -> None:
    env, trainer = env_with(cap=150)
    data = attacker(pool=400, unlabeled="noise", steps=2)
    params = {"sampling": "adaptive", "picks": 300, "round_size": 100, "groups": 4}
    result = make_attack("knockoff", params).run(lenet(), ARCH, data, env)
    assert env.queries.count == 150 == result.info["queries"] == result.info["answered"]
    assert "query budget" in result.info["stopped"]
    assert result.info["rounds"] == 2 and sum(result.info["group_draws"]) == 150
    assert len(trainer.handed) == 3  # a pass after each round, then all the answers


# -- Jacobian-based augmentation ---------------------------------------------------------------
def test_augmented_points_move_by_exactly_lambda_before_clipping() -> None:
    substitute = lenet(seed=4)
    x = images(16).float() / 255
    labels = torch.arange(16) % 10
    for lam in (0.1, -0.1):
        twins = augment(substitute, x, labels, lam)
        moved = (twins - x).abs()
        assert float(moved.max()) == pytest.approx(0.1)
        assert torch.allclose(moved[moved > 0], torch.full_like(moved[moved > 0], 0.1))
        assert float(twins.clamp(0, 1).min()) >= 0 and float(twins.clamp(0, 1).max()) <= 1
    assert [step_size(0.1, 3, r) for r in range(7)] == [0.1] * 3 + [-0.1] * 3 + [0.1]


def test_jacobian_queries_double_each_round_and_stop_at_the_cap() -> None:
    env, _ = env_with()
    data = attacker(labeled=40, data_fraction=0.1, steps=1)
    result = make_attack("jacobian-augmentation", {"seed_size": 10, "rounds": 3}).run(
        lenet(), ARCH, data, env
    )
    # each round asks about as many new points as the set held: 10, +10, +20
    assert result.info["queries_per_round"] == [10, 20, 40] and env.queries.count == 40
    assert result.info["points"] == 40 and "stopped" not in result.info
    capped, _ = env_with(cap=25)
    result = make_attack("jacobian-augmentation", {"seed_size": 10, "rounds": 4}).run(
        lenet(), ARCH, data, capped
    )
    assert capped.queries.count == 25 and result.info["points"] == 25
    assert result.info["queries_per_round"] == [10, 20, 25]
    assert "query budget spent" in result.info["stopped"]
    # in a chain the counter is shared: 5 answers spent by an earlier step leave 20 here
    shared, _ = env_with(cap=25)
    shared.queries.add(5)
    result = make_attack("jacobian-augmentation", {"seed_size": 10, "rounds": 4}).run(
        lenet(), ARCH, data, shared
    )
    assert result.info["queries_per_round"] == [10, 20] and result.info["queries"] == 20
    assert shared.queries.count == 25 and "query budget spent" in result.info["stopped"]


# -- transfer learning -------------------------------------------------------------------------
class Unreadable(nn.Module):
    """A suspect that answers queries but whose weights cannot be read: ``state_dict`` (and
    so any copy of its weights into another model) raises."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the victim's weights were read")


def other_task_run(tmp_path: Path, classes: int = 5) -> tuple[Path, nn.Module]:
    folder = tmp_path / "pretrained"
    RunDir.create(folder, {"command": "train", "config": {"dataset": "other-digits"}})
    model = lenet(seed=9, outputs=classes)
    save_model(folder, model, Architecture("lenet5", (1, 28, 28), classes))
    return folder, model


def test_transfer_learning_starts_from_the_pretrained_features_never_the_victims(
    tmp_path: Path,
) -> None:
    folder, pretrained = other_task_run(tmp_path)
    env, trainer = env_with()
    data = attacker(labeled=64, data_fraction=0.1, steps=2)
    result = make_attack("transfer-learning", {"pretrained": str(folder)}).run(
        Unreadable(lenet()), ARCH, data, env
    )
    (start,) = trainer.handed
    head = head_keys(result.model)
    for key, value in pretrained.state_dict().items():
        if key not in head:
            assert torch.equal(start[key], value), key
    assert start["classifier.4.weight"].shape == (10, 84)  # a new head for the suspect's classes
    assert env.queries.count == 64 == result.info["queries"]
    assert result.arch == ARCH


def test_transfer_learning_refuses_another_input_shape_or_the_suspects_own_task(
    tmp_path: Path, pattern_run: Path
) -> None:
    wide = tmp_path / "wide"
    RunDir.create(wide, {"command": "train", "config": {"dataset": "cifar10"}})
    save_model(wide, lenet(), Architecture("lenet5", (3, 32, 32), 10))
    for given, words in ((wide, "3x32x32 images"), (pattern_run, "the suspect's own task")):
        spec = JobSpec.attack(
            "transfer-learning",
            run=pattern_run,
            pretrained=str(given),
            data_fraction=0.1,
            out=tmp_path / "never",
            device="cpu",
        )
        with pytest.raises(Exception, match=words):
            spec.validate()
    assert not (tmp_path / "never").exists()


# -- bad input at the command line -----------------------------------------------------------
@pytest.mark.parametrize(
    "args, words",
    [
        (["--attack", "transfer-learning", "--pretrained", "no-such-run"], "no-such-run"),
        (["--attack", "knockoff", "--data-fraction", "0.1"], "--unlabeled"),
        (["--attack", "jacobian-augmentation", "--data-fraction", "0"], "seed images"),
        (["--attack", "transfer-learning", "--data-fraction", "0"], "--data-fraction"),
        (["--attack", "transfer-learning"], "synthetic is the suspect's own dataset"),
        (["--attack", "knockoff", "--unlabeled", "noise", "--sampling", "greedy"], "greedy"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(
    pattern_run: Path, tmp_path: Path, args: list[str], words: str
) -> None:
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["attack", "--run", str(pattern_run), "--out", str(out), "--device", "cpu", *args]
    )
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], result.output
    assert "Traceback" not in result.output
    assert not out.exists()
