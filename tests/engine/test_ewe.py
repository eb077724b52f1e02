"""Entangled watermarks (``ewe``): the soft nearest-neighbour loss against a direct O(n^2)
computation, the loss term on a real LeNet-5's hidden layers, the loop's alternation and own
terms leaving other sources untouched, and one embedding through the real embed job."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from engine.config import TrainConfig
from engine.data import load_dataset
from engine.errors import ConfigError
from engine.jobs import embed_job, new_run_manifest, train_job
from engine.models import Architecture, build_model
from engine.runs import RunDir, load_tensors
from engine.session import JobContext, Session
from engine.training import OptimSettings, Source, TrainLoop
from engine.watermarks import get_scheme, load_key, parse_scheme_params
from engine.watermarks.snnl import EntanglementLoss, hidden_layers, snnl


def direct_snnl(points: list[list[float]], labels: list[int], t: float, metric: str) -> float:
    """The loss written out point by point, as the paper and the reference code define it."""
    n = len(points)

    def distance(a: list[float], b: list[float]) -> float:
        if metric == "cosine":
            dot = sum(u * v for u, v in zip(a, b, strict=True))
            norm = math.sqrt(sum(u * u for u in a)) * math.sqrt(sum(v * v for v in b))
            return 1.0 - dot / norm
        return sum((u - v) ** 2 for u, v in zip(a, b, strict=True))

    total = 0.0
    for i in range(n):
        weights = [
            0.0 if j == i else math.exp(-distance(points[i], points[j]) * t / 100) for j in range(n)
        ]
        norm = 1e-7 + sum(weights)
        same = sum(w / norm for j, w in enumerate(weights) if labels[j] == labels[i])
        total += -math.log(1e-7 + same)
    return total / n


@pytest.mark.parametrize(
    ("metric", "t"), [("euclidean", 64.0), ("euclidean", 7.0), ("cosine", 1.0)]
)
def test_snnl_matches_a_direct_computation_on_a_tiny_batch(metric: str, t: float) -> None:
    points = [[0.0, 0.1, 0.3], [0.2, 0.0, 0.1], [1.0, 0.9, 0.4], [0.8, 1.1, 0.5], [0.4, 0.5, 0.6]]
    labels = [0, 0, 1, 1, 0]
    got = snnl(torch.tensor(points), torch.tensor(labels), t, metric)
    assert float(got) == pytest.approx(direct_snnl(points, labels, t, metric), rel=1e-5)


def test_snnl_is_low_for_separate_groups_and_high_for_mixed_ones() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(16, 8, generator=gen) * 0.1, torch.randn(16, 8, generator=gen) * 0.1 + 3
    y = torch.cat([torch.zeros(16), torch.ones(16)])
    apart = snnl(torch.cat([a, b]), y, 100.0)
    mixed = snnl(torch.cat([a, b]), y[torch.randperm(32, generator=gen)], 100.0)
    assert float(apart) < 0.01 < 0.3 < float(mixed)


def test_loss_term_entangles_hidden_layers_and_learns_its_own_temperatures() -> None:
    torch.manual_seed(0)
    model = build_model(Architecture("lenet5", (1, 28, 28), 10))
    x, groups = torch.rand(12, 1, 28, 28), torch.tensor([1, 0] * 6)
    layers = hidden_layers(model)
    assert [type(m).__name__ for m in layers] == ["Conv2d", "Conv2d", "Linear", "Linear"]
    term = EntanglementLoss(6, weight=64.0, temperature=1.0, temperature_lr=0.1, metric="cosine")
    loss = term(model, x, groups)

    outputs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _i, o: outputs.append(o)) for m in layers]
    logits = model(x)
    for h in handles:
        h.remove()
    snnls = [snnl(F.relu(o), groups, 1.0, "cosine") for o in outputs]
    expected = F.cross_entropy(logits, torch.full((12,), 6)) - 64.0 * sum(snnls) / 5
    assert float(loss.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    # the temperatures moved by their own gradient step, and they are not model weights
    assert term.temperatures is not None and len(term.temperatures) == 4
    assert not torch.equal(term.temperatures, torch.ones(4))
    assert all(p is not term.temperatures for p in model.parameters())
    loss.backward()  # the model's gradient flows through every hidden layer's SNNL
    assert all(m.weight.grad is not None and m.weight.grad.abs().sum() > 0 for m in layers)


def loop_of(data: Any, sources: list[Source]) -> TrainLoop:
    torch.manual_seed(0)
    model = build_model(Architecture("lenet5", data.shape, data.num_classes))
    return TrainLoop(
        model,
        sources,
        OptimSettings(lr=0.05),
        ctx=JobContext(lambda e: None),
        phase="t",
        total_steps=6,
        eval_every=100,
    )


def test_every_kth_step_source_and_own_terms_leave_other_sources_unchanged(small_synthetic) -> None:
    data = small_synthetic
    calls: list[int] = []

    def term(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        return model(x).square().mean()

    owner = Source("owner", data.train_x, 16, y=data.train_y)
    plain = loop_of(data, [owner])
    extra = Source("own", data.train_x[:10], 4, y=data.train_y[:10], loss=term, every=3)
    mixed = loop_of(data, [owner, extra])
    for step in range(6):
        alone, n_alone = plain._loss(step)
        both, n_both = mixed._loss(step)
        if step % 3 == 2:  # steps 3 and 6, counted from 1
            assert n_both == n_alone + 4 and not torch.equal(alone, both)
        else:  # bit for bit the owner's cross-entropy
            assert n_both == n_alone and torch.equal(alone, both)
    assert calls == [4, 4]
    with pytest.raises(ConfigError, match="every step"):
        loop_of(data, [extra])


def test_ewe_params_are_checked() -> None:
    with pytest.raises(ConfigError, match="both 3"):
        parse_scheme_params("ewe", {"source_label": 3, "target_label": 3})
    with pytest.raises(ConfigError, match="metric"):
        parse_scheme_params("ewe", {"metric": "manhattan"})


def test_ewe_embeds_through_the_embed_job_and_verifies_above_its_null(
    tmp_path: Path, shared_data_dir: Path
) -> None:
    config = TrainConfig.from_mapping(
        dict(
            dataset="synthetic",
            train_size=2000,
            test_size=500,
            epochs=4,
            optimizer="adam",
            lr=0.003,
            eval_every=40,
            device="cpu",
            data_dir=str(shared_data_dir),
        )
    )
    params = parse_scheme_params("ewe", {})
    run = RunDir.create(tmp_path / "ewe", new_run_manifest(config, "embed"))
    session = Session(embed_job(config, "ewe", params, run), [run.event_sink()]).start()
    list(session.events())
    assert session.status == "completed"
    summary = run.summary()
    verdict = summary["verify"]
    assert verdict["verified"] and verdict["retention"] > verdict["null_rate"] + 0.5
    assert summary["test_acc"] > 0.5  # the SNNL term did not collapse the task
    key = load_key(run.path / "key")
    assert len(key.tensor("train_x")) == len(key.tensor("target_x")) == 100
    weights = load_tensors(run.path / "model.safetensors", "model")
    assert not any("temp" in name for name in weights)
    # a model trained without the key does not answer the trigger: the key is what verifies
    clean = RunDir.create(tmp_path / "clean", new_run_manifest(config, "train"))
    session = Session(train_job(config, clean), [clean.event_sink()]).start()
    list(session.events())
    model, _ = clean.load_model("cpu")
    loaded = load_dataset("synthetic", shared_data_dir, train_size=2000, test_size=500).data
    assert not get_scheme("ewe").verify(model, key, loaded, 1e-3).verified
