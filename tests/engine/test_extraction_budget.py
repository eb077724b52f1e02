"""The extraction budget and the answer side of a deployed model: the query cap is enforced
by the one counter, answers come as probabilities or top-1 labels, a noise transfer set is
seeded, and answer filters are served, saved and loaded (never unpickled) with the model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, build_attacker_data
from engine.attacks.queries import QueryBudgetSpent, QueryCounter
from engine.attacks.registry import AttackEnv
from engine.attacks.stealing import ask, ask_within_budget, counted_victim, fresh_model
from engine.data import load_dataset
from engine.deploy import DEPLOY_SPEC, Deployed, describe_deployment, filters_of
from engine.errors import ConfigError
from engine.filters import FILTERS, AnswerFilter, register_filter
from engine.models import Architecture, build_model
from engine.registry import param
from engine.runs import load_model, save_model
from engine.session import JobContext

ARCH = Architecture("lenet5", (1, 28, 28), 10)


def env(cap: int = 0) -> AttackEnv:
    ctx = JobContext(lambda event: None)
    return AttackEnv(ctx, torch.device("cpu"), 0, lambda *a, **k: None, queries=QueryCounter(cap))


def victim(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ARCH).eval()


def uint8_images(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)


# -- the budget ------------------------------------------------------------------------------
def test_answers_and_noise_are_budget_values_and_bad_ones_are_one_line() -> None:
    budget = AttackerBudget.from_mapping({"answers": "labels", "unlabeled": "noise"})
    assert (budget.answers, budget.unlabeled) == ("labels", "noise")
    with pytest.raises(ConfigError, match="answers"):
        AttackerBudget.from_mapping({"answers": "logits"})
    with pytest.raises(ConfigError, match="queries"):
        AttackerBudget.from_mapping({"queries": -1})
    with pytest.raises(ConfigError, match=r"imagenet|unknown"):
        AttackerBudget.from_mapping({"unlabeled": "imagenet-nope"})


def test_a_noise_transfer_set_is_seeded_and_capped_by_the_queries(shared_data_dir) -> None:
    data = load_dataset("synthetic", shared_data_dir, train_size=200, test_size=50).data
    budget = AttackerBudget.from_mapping({"unlabeled": "noise", "queries": 300})
    first = build_attacker_data(budget, data, seed=3).unlabeled_x
    again = build_attacker_data(budget, data, seed=3).unlabeled_x
    other = build_attacker_data(budget, data, seed=4).unlabeled_x
    assert first.shape == (300, *data.shape) and first.dtype == torch.uint8
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert 100 < first.float().mean() < 155  # uniform over 0..255


def test_the_transfer_set_is_the_unlabelled_source_else_the_labelled_images(
    shared_data_dir,
) -> None:
    data = load_dataset("synthetic", shared_data_dir, train_size=200, test_size=50).data
    own = build_attacker_data(AttackerBudget.from_mapping({"data_fraction": 0.5}), data, seed=0)
    assert torch.equal(own.transfer_images(), own.labeled_x)
    assert own.images_used() == (len(own.labeled_x), 0)  # images, but no true label
    noisy = AttackerBudget.from_mapping({"data_fraction": 0.5, "unlabeled": "noise"})
    other = build_attacker_data(noisy, data, seed=0)
    assert torch.equal(other.transfer_images(), other.unlabeled_x)
    nothing = build_attacker_data(AttackerBudget.from_mapping({"data_fraction": 0}), data, seed=0)
    with pytest.raises(ConfigError, match="--unlabeled"):
        nothing.transfer_images()


# -- the counter and the answers ---------------------------------------------------------------
def test_the_counter_refuses_a_batch_past_its_cap_and_answers_none_of_it() -> None:
    counter = QueryCounter(10)
    counter.add(6)
    with pytest.raises(QueryBudgetSpent, match="6 of 10 answers given, 5 more asked"):
        counter.add(5)
    assert (counter.count, counter.remaining) == (6, 4)
    counter.add(4)
    assert counter.remaining == 0
    assert QueryCounter().remaining is None


def test_ask_counts_one_query_per_image_and_answers_probabilities_or_labels() -> None:
    model, x, e = victim(), uint8_images(25), env()
    probs = ask(model, x, e, "probs", batch=10)
    assert probs.shape == (25, 10) and torch.allclose(probs.sum(1), torch.ones(25), atol=1e-5)
    labels = ask(model, x, e, "labels", batch=7)
    assert set(labels.unique().tolist()) <= {0.0, 1.0} and torch.equal(
        labels.sum(1), torch.ones(25)
    )
    assert torch.equal(labels.argmax(1), probs.argmax(1))
    assert e.queries.count == 50


def test_ask_within_budget_answers_what_is_left_and_then_stops() -> None:
    model, e = victim(), env(cap=30)
    kept, targets = ask_within_budget(model, uint8_images(20), e, "probs")
    assert len(kept) == len(targets) == 20
    kept, targets = ask_within_budget(model, uint8_images(20, seed=1), e, "probs")
    assert len(kept) == 10 and torch.equal(kept, uint8_images(20, seed=1)[:10])
    with pytest.raises(QueryBudgetSpent):
        ask_within_budget(model, uint8_images(5), e, "probs")
    assert e.queries.count == 30


def test_a_counted_victim_is_copied_once_and_still_counts() -> None:
    model, e = victim(), env()
    teacher = counted_victim(model, e)
    for _ in range(3):
        ask(teacher, uint8_images(4), e, "labels")
    assert e.queries.count == 12
    assert all(not p.requires_grad for p in teacher.parameters())


def test_fresh_models_are_seeded_and_leave_the_global_stream_alone() -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, arch = fresh_model(ARCH, "", 5, torch.device("cpu"))
    after = torch.rand(1)
    b, _ = fresh_model(ARCH, "", 5, torch.device("cpu"))
    assert arch == ARCH and torch.equal(before, after)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


# -- answer filters on a deployed model --------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class FlipParams:
    shift: int = param(1, "classes to rotate every answer by", low=0, high=9)


class Flip(AnswerFilter):
    """A test filter with a tensor (saved in deploy.safetensors) and a bound secret."""

    learnt = True

    def __init__(self, params: Any) -> None:
        super().__init__(params)
        self.register_buffer("scale", torch.ones(1))
        self.bound: Path | None = None

    def forward(self, x: torch.Tensor, logits: torch.Tensor, inner: nn.Module) -> torch.Tensor:
        return torch.roll(logits, self.params.shift, dims=1) * self.scale

    def bind(self, folder: Path) -> None:
        self.bound = folder


@pytest.fixture()
def flip_filter():
    register_filter("test-flip", FlipParams)(Flip)
    yield
    FILTERS.unregister("test-flip")


def test_a_filter_is_served_after_the_classifier_saved_and_reloaded(
    tmp_path: Path, flip_filter
) -> None:
    from engine.filters import make_filter

    model = victim()
    flip = make_filter("test-flip", {"shift": 2})
    flip.scale.fill_(3.0)
    served = Deployed.wrap(model, filters=[flip])
    x = torch.rand(3, 1, 28, 28)
    assert torch.allclose(served(x), torch.roll(model(x), 2, dims=1) * 3.0)
    assert list(served.parameters()) == list(model.parameters())  # no filter weights inside
    save_model(tmp_path, served, ARCH)
    record = json.loads((tmp_path / DEPLOY_SPEC).read_text())
    assert record["filters"] == [{"name": "test-flip", "params": {"shift": 2}}]
    assert describe_deployment(tmp_path) == "model => test-flip(shift=2)"
    loaded, _ = load_model(tmp_path, "cpu")
    (again,) = filters_of(loaded)
    assert again.bound == tmp_path and float(again.scale) == 3.0
    assert torch.allclose(loaded(x), served(x), atol=1e-6)


def test_wrapping_appends_filters_after_those_already_served(flip_filter) -> None:
    from engine.filters import make_filter

    one, two = make_filter("test-flip", {"shift": 1}), make_filter("test-flip", {"shift": 3})
    served = Deployed.wrap(Deployed.wrap(victim(), filters=[one]), filters=[two])
    assert [f.params.shift for f in served.filters] == [1, 3]
    assert "=>" in served.describe()


def test_the_cost_counts_the_transfer_images_answered_not_the_whole_set(shared_data_dir) -> None:
    from engine.attacks.stealing import ask_transfer_set

    data = load_dataset("synthetic", shared_data_dir, train_size=200, test_size=50).data
    budget = AttackerBudget.from_mapping({"data_fraction": 0.5, "answers": "labels"})
    attacker = build_attacker_data(budget, data, seed=0)
    x, targets = ask_transfer_set(victim_for(data), attacker, env(cap=30))
    assert len(x) == len(targets) == 30 and targets.sum(1).eq(1).all()
    assert attacker.images_used() == (30, 0)
    seeds = build_attacker_data(budget, data, seed=0)
    assert len(seeds.transfer_images(12)) == 12 and seeds.images_used() == (12, 0)


def victim_for(data) -> nn.Module:
    torch.manual_seed(0)
    return build_model(Architecture("lenet5", data.shape, data.num_classes)).eval()
