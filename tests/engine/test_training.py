import math

import pytest
import torch

from engine import commands as cmd
from engine.events import Log, Metrics
from engine.metrics import Probe, accuracy
from engine.models import Architecture, build_model
from engine.session import JobContext
from engine.training import Diverged, IndexStream, OptimSettings, Source, TrainLoop, lr_factor


def make_loop(data, events, steps=60, sources=None, **kwargs) -> TrainLoop:
    torch.manual_seed(0)
    model = build_model(Architecture("lenet5", data.shape, data.num_classes))
    ctx = JobContext(events.append)
    return TrainLoop(
        model,
        sources or [Source("owner", data.train_x, 64, y=data.train_y)],
        kwargs.pop("settings", OptimSettings(lr=0.05, schedule="cosine")),
        ctx=ctx,
        phase="train",
        total_steps=steps,
        probes=[Probe("test", data.test_x, data.test_y)],
        eval_every=20,
        **kwargs,
    )


def test_loop_learns_and_reports(small_synthetic) -> None:
    events: list = []
    loop = make_loop(
        small_synthetic, events, steps=80, settings=OptimSettings(optimizer="adam", lr=0.003)
    )
    result = loop.run()
    metrics = [e for e in events if isinstance(e, Metrics)]
    assert [m.step for m in metrics if m.test_acc is not None] == [16, 20, 32, 40, 48, 60, 64, 80]
    assert result.test_acc is not None and result.test_acc > 0.6  # chance is 0.1
    assert metrics[-1].loss < metrics[0].loss
    assert all(m.images_per_s > 0 for m in metrics)


def test_mixed_batches_take_each_source_share(small_synthetic) -> None:
    data = small_synthetic
    seen = []
    marker = Source(
        "key",
        data.train_x[:10],
        8,
        y=torch.full((10,), 3),
        transform=lambda x: seen.append(len(x)) or x.clamp(max=0.5),
    )
    loop = make_loop(
        data, [], steps=5, sources=[Source("owner", data.train_x, 24, y=data.train_y), marker]
    )
    x, y = loop._batch(0)
    assert x.shape[0] == 32 and (y[24:] == 3).all()
    assert x[24:].max() <= 0.5 and seen == [8]


def test_index_stream_is_reproducible_and_covers_each_pass() -> None:
    a, b = (
        IndexStream(10, 4, seed=1, device=torch.device("cpu")),
        IndexStream(10, 4, seed=1, device=torch.device("cpu")),
    )
    first_pass = torch.cat([a.indices(s) for s in range(3)])
    assert sorted(first_pass.tolist()) == list(range(10))
    assert torch.equal(b.indices(4), a.indices(4))  # jump straight to a later step
    assert not torch.equal(a.indices(0), a.indices(3))  # reshuffled next pass
    small = IndexStream(3, 8, seed=0, device=torch.device("cpu"))
    assert len(small.indices(0)) == 8


def test_schedules() -> None:
    step = OptimSettings(schedule="step", step_size=500, gamma=0.9)
    assert lr_factor(step, 499, 10_000) == 1.0 and lr_factor(step, 1000, 10_000) == pytest.approx(
        0.81
    )
    cosine = OptimSettings(schedule="cosine")
    assert lr_factor(cosine, 0, 100) == 1.0 and lr_factor(cosine, 50, 100) == pytest.approx(0.5)
    assert lr_factor(OptimSettings(), 123, 200) == 1.0


def test_set_lr_and_scale_lr_apply_between_steps(small_synthetic) -> None:
    events: list = []
    loop = make_loop(small_synthetic, events, steps=40, settings=OptimSettings(lr=0.05))
    loop.ctx.send(cmd.SetLR(0.01))
    loop.ctx.send(cmd.ScaleLR(0.5))
    loop.ctx.send(cmd.SetLR(-1.0))
    loop.run()
    assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)
    logs = [e.message for e in events if isinstance(e, Log)]
    assert any("learning rate set to 0.01" in m for m in logs)
    assert any("learning rate change refused" in m for m in logs)


def test_nan_loss_stops_phase_names_step_and_restores_model(small_synthetic) -> None:
    data = small_synthetic
    calls = {"n": 0}

    def poison(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        return x * float("nan") if calls["n"] >= 30 else x

    source = Source("owner", data.train_x, 32, y=data.train_y, transform=poison)
    events: list = []
    loop = make_loop(
        data,
        events,
        steps=100,
        sources=[source],
        settings=OptimSettings(optimizer="adam", lr=0.003),
    )
    with pytest.raises(Diverged) as info:
        loop.run()
    assert info.value.step == 30
    assert all(torch.isfinite(p).all() for p in loop.model.parameters())
    # the restored model is exactly the one evaluated at step 20
    at_20 = next(e.test_acc for e in events if isinstance(e, Metrics) and e.step == 20)
    assert at_20 > 0.2
    assert accuracy(loop.model, Probe("test", data.test_x, data.test_y)) == at_20


def test_training_is_deterministic_for_a_seed(small_synthetic) -> None:
    a, b = make_loop(small_synthetic, [], steps=10), make_loop(small_synthetic, [], steps=10)
    a.run()
    b.run()
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert math.isfinite(a.lr)


def test_mixed_precision_channels_last_path_runs_and_learns(small_synthetic) -> None:
    """The CUDA path (bf16 autocast + channels_last), forced on CPU so CI exercises it."""
    events: list = []
    loop = make_loop(
        small_synthetic,
        events,
        steps=60,
        amp=True,
        settings=OptimSettings(optimizer="adam", lr=0.003),
    )
    conv2 = loop.model.features[3].weight  # 16x6x5x5: channels_last differs from contiguous
    assert conv2.is_contiguous(memory_format=torch.channels_last) and not conv2.is_contiguous()
    result = loop.run()
    assert result.test_acc is not None and result.test_acc > 0.5
    assert all(
        p.dtype == torch.float32 for p in loop.model.parameters()
    )  # master weights stay fp32


def test_done_ends_the_phase_at_an_evaluation_and_says_why(small_synthetic) -> None:
    """A phase may end before total_steps once its goal is met (a data-free embedding stops
    when every trigger is learnt); it is asked only at evaluations, with their scores."""
    events: list = []
    asked: list[tuple[int, float]] = []

    def done(step: int, scores: dict[str, float]) -> str | None:
        asked.append((step, scores["test"]))
        return "learnt enough" if step >= 40 and scores["test"] > 0.3 else None

    loop = make_loop(
        small_synthetic,
        events,
        steps=400,
        settings=OptimSettings(optimizer="adam", lr=0.003),
        done=done,
        on_checkpoint=lambda loop: f"step {loop.step}",
    )
    result = loop.run()
    assert result.steps < 400 and result.steps == asked[-1][0]
    assert loop.finished_early == "learnt enough"
    assert all(step < 40 or acc <= 0.3 for step, acc in asked[:-1])
    logs = [e.message for e in events if isinstance(e, Log)]
    assert f"checkpoint saved: step {result.steps}" in logs
    assert logs[-1] == f"train ended at step {result.steps}: learnt enough"


def test_done_is_not_asked_after_the_last_step(small_synthetic) -> None:
    asked: list[int] = []
    loop = make_loop(small_synthetic, [], steps=40, done=lambda s, _: asked.append(s))
    assert loop.run().steps == 40 and loop.finished_early is None and 40 not in asked
