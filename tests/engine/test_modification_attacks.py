"""The SoK's model-modification attacks: weight quantisation, weight shifting, feature
permutation, label smoothing, adversarial and L2 fine-tuning. Each property is measured on a
real model; each attack also runs as a refereed job on the pattern-watermarked LeNet-5."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from engine.attacks import ATTACKS, MODIFICATION, make_attack
from engine.attacks.adversarial_training import batch_split, parse_eps, pgd
from engine.attacks.feature_permutation import permute_units
from engine.attacks.regularization import phase_steps
from engine.attacks.weight_quantization import quantize_model, quantize_tensor
from engine.attacks.weight_shifting import shift_weights, shifted_layers
from engine.errors import ConfigError
from engine.jobs import JobSpec, run
from engine.models import Architecture, build_model
from engine.runs import RunDir, load_model

NAMES = (
    "weight-quantization",
    "weight-shifting",
    "feature-permutation",
    "label-smoothing",
    "adversarial-training",
    "regularization",
)


def model_of(
    name: str, shape: tuple[int, int, int] = (1, 28, 28), seed: int = 0, outputs: int = 10
) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(Architecture(name, shape, outputs))


def test_all_six_are_registered_as_modification() -> None:
    for name in NAMES:
        assert ATTACKS.get(name).family == MODIFICATION


@pytest.mark.parametrize("bits", [1, 2, 5])
def test_quantisation_leaves_at_most_2_to_the_bits_values_per_layer(bits: int) -> None:
    model = model_of("lenet5")
    before = [p.detach().clone() for p in model.parameters()]
    assert quantize_model(model, bits) == len(before)
    for p, old in zip(model.parameters(), before, strict=True):
        assert len(torch.unique(p)) <= 2**bits
        # rounding to the nearest grid point: never off by more than half a step
        step = (old.max() - old.min()) / (2**bits - 1)
        assert float((p.detach() - old).abs().max()) <= float(step) / 2 + 1e-6
    # a wide layer really uses the levels it may: quantisation is not a constant
    assert len(torch.unique(model.classifier[0].weight)) == 2**bits


def test_quantisation_at_16_bits_is_nearly_the_identity() -> None:
    values = torch.randn(1000)
    assert torch.allclose(quantize_tensor(values, 16), values, atol=1e-3)


def test_weight_shifting_moves_each_filter_by_lambda_times_the_mean_filter() -> None:
    model = model_of("lenet5")
    before = {id(m): m.weight.detach().clone() for m in shifted_layers(model)}
    biases = [m.bias.detach().clone() for m in shifted_layers(model)]
    changes = shift_weights(model, 1.5, 0.0)
    layers = shifted_layers(model)
    assert len(layers) == len(changes) == 5  # 2 conv + 3 linear, chosen by type
    for layer, change, bias in zip(layers, changes, biases, strict=True):
        old = before[id(layer)]
        delta = old - layer.weight.detach()
        expected = 1.5 * old.mean(0, keepdim=True).expand_as(old)
        assert torch.allclose(delta, expected, atol=1e-6)
        norm = 1.5 * float(old.mean(0).norm()) * old.shape[0] ** 0.5
        assert change["shift_norm"] == pytest.approx(norm, rel=1e-4)
        assert float(delta.norm()) == pytest.approx(norm, rel=1e-4)
        assert torch.equal(layer.bias, bias)  # biases stay, as in WRT


def test_weight_shifting_noise_has_lambda2_times_the_layer_deviation() -> None:
    model = model_of("lenet5")
    layer = model.classifier[0]  # 48000 weights: the sample deviation is tight
    old = layer.weight.detach().clone()
    shift_weights(model, 1.5, 2.0, torch.Generator().manual_seed(3))
    residual = old - 1.5 * old.mean(0, keepdim=True) - layer.weight.detach()
    assert float(residual.mean()) == pytest.approx(0.0, abs=0.02 * float(old.std()))
    assert float(residual.std()) == pytest.approx(2.0 * float(old.std()), rel=0.03)


def test_weight_shifting_picks_layers_by_type_not_name() -> None:
    class Oddly(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 4, 3)  # no "conv" in the name: WRT's rule would skip it
            self.head = nn.Linear(4, 2)
            self.scale = nn.Parameter(torch.ones(3))  # not a conv/linear weight

    model = Oddly()
    stem = model.stem.weight.detach().clone()
    shift_weights(model, 1.0, 0.0)
    assert not torch.equal(model.stem.weight, stem)
    assert torch.equal(model.scale, torch.ones(3))


@pytest.mark.parametrize(
    ("arch", "shape"),
    [("lenet5", (1, 28, 28)), ("digit-cnn", (1, 28, 28)), ("resnet18", (3, 32, 32))],
)
def test_feature_permutation_keeps_every_output_and_moves_the_weights(arch, shape) -> None:
    model = model_of(arch, shape).eval()
    for module in model.modules():  # BatchNorm statistics that matter (fresh ones are 0 and 1)
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-1.0, 1.0)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    original = copy.deepcopy(model)
    x = torch.rand(8, *shape)
    units = permute_units(model, torch.Generator().manual_seed(1))
    assert units > 0
    with torch.no_grad():
        assert torch.allclose(model(x), original(x), atol=1e-5)
    moved = [
        name
        for (name, p), q in zip(model.named_parameters(), original.parameters(), strict=True)
        if not torch.equal(p, q)
    ]
    # every hidden layer of the plain CNNs moved; in ResNet-18, the inner conv of each block
    hidden = {"lenet5": 4, "digit-cnn": 3, "resnet18": 8}[arch]
    assert len({n.rsplit(".", 1)[0] for n in moved if n.endswith("weight")}) >= hidden


def test_feature_permutation_of_a_deployed_model_keeps_its_transforms(tmp_path: Path) -> None:
    from engine.attacks import AttackEnv, AttackerBudget, AttackerData
    from engine.deploy import Deployed, unwrap
    from engine.session import JobContext
    from engine.transforms.registry import make_transform

    served = Deployed.wrap(model_of("lenet5"), [make_transform("gaussian-smoothing")]).eval()
    original = copy.deepcopy(served)
    empty = torch.zeros((0, 1, 28, 28), dtype=torch.uint8)
    data = AttackerData(
        AttackerBudget(), empty, empty[:, 0, 0, 0].long(), empty, (1, 28, 28), 10, 5
    )
    env = AttackEnv(JobContext(), torch.device("cpu"), 5, lambda *a, **k: None)
    attack = make_attack("feature-permutation")
    result = attack.run(served, Architecture("lenet5", (1, 28, 28), 10), data, env)
    assert isinstance(result.model, Deployed) and result.model.transforms == served.transforms
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(result.model(x), original(x), atol=1e-5)
    assert not torch.equal(
        unwrap(result.model).classifier[0].weight, unwrap(original).classifier[0].weight
    )


def test_feature_permutation_refuses_a_model_it_cannot_walk() -> None:
    with pytest.raises(ConfigError, match="feature-permutation walks models"):
        permute_units(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), torch.Generator())


def test_pgd_stays_within_each_radius_and_lowers_the_confidence() -> None:
    model = model_of("lenet5").eval()
    x = torch.rand(6, 1, 28, 28)
    radii = torch.tensor([0.01, 0.01, 0.1, 0.1, 0.25, 0.25])
    adv = pgd(model, x, radii, 0.01, 5)
    gap = (adv - x).abs().flatten(1).max(1).values
    assert torch.all(gap <= radii + 1e-6) and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        label = model(x).argmax(1)
        before = model(x).log_softmax(1).gather(1, label[:, None])
        after = model(adv).log_softmax(1).gather(1, label[:, None])
    assert float(after.sum()) < float(before.sum())
    assert not model.training  # the mode it was given comes back


def test_adversarial_training_params() -> None:
    assert parse_eps("0.01, 0.1,0.25") == (0.01, 0.1, 0.25)
    for bad in ("0", "0.1,x", "2", "-0.1"):
        with pytest.raises(ConfigError, match="eps"):
            make_attack("adversarial-training", {"eps": bad})
    assert batch_split(64, 1000, 3000) == (16, 48)
    assert batch_split(64, 100_000, 3000) == (62, 2)


def test_regularization_splits_the_budget() -> None:
    assert phase_steps(10, 0.5) == (5, 5)
    assert phase_steps(1, 0.5) == (1, 0)
    assert phase_steps(7, 1.0) == (7, 0)


@pytest.mark.parametrize("bits", ["0", "17", "x"])
def test_bits_outside_1_to_16_are_refused(bits: str) -> None:
    with pytest.raises(ConfigError, match="bits"):
        make_attack("weight-quantization", {"bits": bits})


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("weight-quantization", {"bits": 4}),
        ("weight-shifting", {}),
        ("feature-permutation", {}),
        ("label-smoothing", {}),
        ("adversarial-training", {"iterations": 2, "batch": 16}),
        ("regularization", {}),
    ],
)
def test_each_attack_runs_as_a_refereed_job(pattern_run: Path, tmp_path: Path, name, params):
    out = tmp_path / "attacked"
    spec = JobSpec.attack(
        name, run=pattern_run, out=out, data_fraction=0.1, steps=4, device="cpu", **params
    )
    result = run(spec)
    summary = result.summary
    assert summary["status"] == "completed"
    assert summary["before"]["retention"]  # the owner's key was refereed before and after
    assert set(summary["after"]["retention"]) == set(summary["before"]["retention"])
    original, _ = load_model(pattern_run)
    attacked, arch = load_model(out)
    assert arch.name == "lenet5"
    changed = any(
        not torch.equal(p, q)
        for p, q in zip(attacked.parameters(), original.parameters(), strict=True)
    )
    assert changed  # every one of them moves the weights
    trains = name not in ("feature-permutation",)
    assert summary["steps"] == (4 if trains else 0)
    if name == "feature-permutation":
        assert summary["after"]["test_acc"] == pytest.approx(summary["before"]["test_acc"])
        assert summary["after"]["retention"] == pytest.approx(summary["before"]["retention"])
    assert RunDir(out).summary()["status"] == "completed"


class Recorder:
    """``env.train`` that records what an attack hands the loop and trains nothing."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, model, sources, settings, *, steps, params=None):
        from engine.attacks import TrainReport

        self.calls.append({"sources": sources, "settings": settings, "steps": steps})
        return TrainReport(steps, 0.0)


def handed(
    name: str, params: dict, n: int = 40, outputs: int = 10, **budget
) -> tuple[Recorder, Any]:
    from engine.attacks import AttackEnv, AttackerBudget, AttackerData
    from engine.session import JobContext

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=gen, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=gen)
    data = AttackerData(AttackerBudget(**budget), x, y, x[:0], (1, 28, 28), 10, seed=0)
    recorder = Recorder()
    env = AttackEnv(JobContext(), torch.device("cpu"), 0, recorder)
    make_attack(name, params).run(
        model_of("lenet5", outputs=outputs), Architecture("lenet5", (1, 28, 28), outputs), data, env
    )
    return recorder, data


def test_label_smoothing_trains_against_smoothed_suspect_labels() -> None:
    recorder, data = handed("label-smoothing", {"epsilon": 0.3}, steps=3)
    (call,) = recorder.calls
    (source,) = call["sources"]
    assert source.y.shape == (40, 10) and torch.allclose(source.y.sum(1), torch.ones(40))
    assert torch.allclose(source.y.max(1).values, torch.full((40,), 0.7 + 0.03))
    assert torch.allclose(source.y.min(1).values, torch.full((40,), 0.03))
    # the suspect's own labels (WRT's true_labels: False), not the attacker's true ones
    with torch.no_grad():
        suspect = model_of("lenet5").eval()(data.labeled_x.float() / 255).argmax(1)
    assert torch.equal(source.y.argmax(1), suspect)
    recorder, _ = handed("label-smoothing", {"labels": "true"}, steps=3)
    assert torch.equal(recorder.calls[0]["sources"][0].y.argmax(1), data.labeled_y)


def test_label_smoothing_spreads_over_a_new_label_models_eleven_outputs() -> None:
    """A newlabel model answers in K+1 classes: the smoothed targets cover all of them (the
    dataset's 10 made cross-entropy refuse the 11-output logits)."""
    recorder, _ = handed("label-smoothing", {"epsilon": 0.3}, outputs=11, steps=3)
    targets = recorder.calls[0]["sources"][0].y
    assert targets.shape == (40, 11)
    assert torch.allclose(targets.min(1).values, torch.full((40,), 0.3 / 11))


def test_regularization_runs_l2_then_plain_fine_tuning() -> None:
    recorder, _ = handed("regularization", {"l2": 0.1, "reg_share": 0.5}, steps=10)
    strong, plain = recorder.calls
    assert (strong["steps"], plain["steps"]) == (5, 5)
    assert strong["settings"].weight_decay == 0.1 and plain["settings"].weight_decay == 5e-4


def test_adversarial_training_mixes_clean_and_pgd_images_in_wrt_proportion() -> None:
    recorder, data = handed(
        "adversarial-training", {"iterations": 3, "batch": 16, "samples": 20}, steps=2
    )
    (call,) = recorder.calls
    clean, adversarial = call["sources"]
    # 40 clean images against 3 radii x 20 samples: 16 x 60/100 per batch
    assert (clean.per_batch, adversarial.per_batch) == (6, 10)
    assert clean.transform is None and adversarial.transform is not None
    x = data.labeled_x[:6].float() / 255
    moved = (adversarial.transform(x) - x).abs().flatten(1).max(1).values
    radii = torch.tensor([0.01, 0.01, 0.1, 0.1, 0.25, 0.25])
    assert torch.all(moved <= radii + 1e-6) and torch.all(moved > 0)
