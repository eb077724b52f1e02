"""Deployed models and their input transforms: each transform's defining property, the spec on
disk (plain JSON, never unpickled), composition, and the straight-through gradient."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.deploy import DEPLOY_SPEC, DEPLOY_WEIGHTS, Deployed, transforms_of, unwrap
from engine.errors import ConfigError, RunError
from engine.metrics import Probe, accuracy
from engine.models import Architecture, build_model
from engine.runs import load_model, save_model
from engine.transforms import TRANSFORMS, make_transform
from engine.transforms.gaussian import gaussian_kernel

ARCH = Architecture("lenet5", (1, 28, 28), 10)


def lenet(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ARCH).eval()


def images(n: int = 4, channels: int = 1, size: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


# -- the transforms ----------------------------------------------------------------------------
@pytest.mark.parametrize("sigma", [0.0, 1e-4, 0.05])
def test_gaussian_smoothing_tends_to_the_identity(sigma: float) -> None:
    x = images(channels=3)
    out = make_transform("gaussian-smoothing", {"sigma": sigma})(x)
    assert torch.allclose(out, x, atol=1e-6)


def test_gaussian_smoothing_blurs_a_point_into_wrts_kernel() -> None:
    # WRT's sigma 0.5: a 5x5 kernel exp(-d^2 / (2 sigma^2)) over offsets -2..2, summing to 1
    point = torch.zeros(1, 1, 9, 9)
    point[0, 0, 4, 4] = 1.0
    out = make_transform("gaussian-smoothing", {"sigma": 0.5})(point)[0, 0]
    d = torch.arange(-2, 3, dtype=torch.float64)
    one = torch.exp(-(d**2) / 0.5)
    expected = torch.outer(one, one) / one.sum() ** 2
    assert torch.allclose(out[2:7, 2:7].double(), expected, atol=1e-6)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5) and out[4, 4] < 0.7
    assert len(gaussian_kernel(0.7)) == 7  # ceil(6 * 0.7 + 1) = 6, made odd


@pytest.mark.parametrize("bits", [1, 2, 3, 5])
def test_input_quantization_leaves_at_most_2_to_the_bits_values(bits: int) -> None:
    x = images(n=8, channels=3, size=16)
    out = make_transform("input-quantization", {"bits": bits})(x)
    values = out.unique()
    assert 2 ** (bits - 1) < len(values) <= 2**bits
    # bin centres, within half a bin of the input
    assert ((values * 2**bits - 0.5).round() - (values * 2**bits - 0.5)).abs().max() < 1e-4
    assert (out - x).abs().max() <= 0.5 / 2**bits + 1e-6


def naive_median(image: np.ndarray, k: int) -> np.ndarray:
    """scipy.ndimage.median_filter(mode="reflect") written out: the window of pixel i covers
    i - k//2 .. i + k - 1 - k//2, edges mirrored with the edge pixel repeated."""
    h, w = image.shape

    def at(i: int, n: int) -> int:
        while i < 0 or i >= n:
            i = -i - 1 if i < 0 else 2 * n - 1 - i
        return i

    out = np.empty_like(image)
    for r in range(h):
        for c in range(w):
            window = [
                image[at(r + a, h), at(c + b, w)]
                for a in range(-(k // 2), k - k // 2)
                for b in range(-(k // 2), k - k // 2)
            ]
            out[r, c] = sorted(window)[len(window) // 2]
    return out


@pytest.mark.parametrize("kernel", [2, 3, 5])
def test_median_smoothing_matches_scipys_median_filter(kernel: int) -> None:
    x = images(n=2, channels=2, size=7)
    out = make_transform("median-smoothing", {"kernel": kernel})(x)
    for n in range(2):
        for c in range(2):
            expected = naive_median(x[n, c].numpy(), kernel)
            assert np.allclose(out[n, c].numpy(), expected)


def test_mean_smoothing_averages_a_window_with_zero_padding() -> None:
    x = torch.ones(1, 1, 6, 6)
    out = make_transform("mean-smoothing", {"kernel": 3})(x)[0, 0]
    assert out[1:5, 1:5].allclose(torch.ones(4, 4))  # inside: the window's mean
    assert out[0, 0].item() == pytest.approx(4 / 9) and out[0, 2].item() == pytest.approx(6 / 9)
    spike = torch.zeros(1, 1, 5, 5)
    spike[0, 0, 2, 2] = 9.0
    assert make_transform("mean-smoothing", {"kernel": 3})(spike)[0, 0, 1:4, 1:4].allclose(
        torch.ones(3, 3)
    )


def test_feature_squeezing_rounds_to_the_bit_depth_then_takes_the_median() -> None:
    x = images(n=2, channels=1, size=10)
    plain = make_transform("feature-squeezing", {"bits": 2, "kernel": 1})(x)
    assert set((plain * 3).round().unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert (plain * 3 - (plain * 3).round()).abs().max() < 1e-5
    filtered = make_transform("feature-squeezing", {"bits": 2, "kernel": 3})(x)
    expected = naive_median(plain[0, 0].numpy(), 3)
    assert np.allclose(filtered[0, 0].numpy(), expected)


def test_flipping_mirrors_left_to_right() -> None:
    x = images()
    out = make_transform("input-flipping")(x)
    assert torch.equal(out[..., 0], x[..., -1]) and torch.equal(out.flip(-1), x)


def test_noising_is_seeded_and_clipped() -> None:
    x = images(n=3, channels=3)
    one = make_transform("input-noising", {"sigma": 0.2, "noise_seed": 5})
    two = make_transform("input-noising", {"sigma": 0.2, "noise_seed": 5})
    other = make_transform("input-noising", {"sigma": 0.2, "noise_seed": 6})
    first = one(x)
    assert torch.equal(first, two(x)) and not torch.equal(first, other(x))
    assert not torch.equal(first, one(x))  # the next query gets fresh noise
    assert first.min() >= 0 and first.max() <= 1
    assert 0.1 < (first - x).std() < 0.25
    assert make_transform("input-noising").resolved(11).params.noise_seed == 11


@pytest.mark.parametrize("channels", [1, 3])
def test_jpeg_round_trips_grey_and_rgb(channels: int) -> None:
    # smooth content, as photographs are: Pillow's 4:2:0 chroma subsampling (WRT's too)
    # costs sharp colour edges more than quality 100 suggests
    x = torch.nn.functional.interpolate(images(n=2, channels=channels, size=4), 32, mode="bilinear")
    x = (x * 255).round() / 255
    best = make_transform("jpeg", {"quality": 100})(x)
    worst = make_transform("jpeg", {"quality": 5})(x)
    assert best.shape == x.shape == worst.shape
    assert (best - x).abs().mean() < 0.02 < (worst - x).abs().mean()
    with pytest.raises(ConfigError, match="grey or RGB"):
        make_transform("jpeg")(images(channels=2))


def test_jpeg_at_quality_100_keeps_accuracy(pattern_run: Path, small_synthetic) -> None:
    model, _ = load_model(pattern_run)
    probe = Probe("test", small_synthetic.test_x, small_synthetic.test_y)
    plain = accuracy(model, probe)
    served = accuracy(Deployed.wrap(model, [make_transform("jpeg", {"quality": 100})]), probe)
    harsh = accuracy(Deployed.wrap(model, [make_transform("jpeg", {"quality": 1})]), probe)
    assert plain > 0.5
    assert abs(served - plain) < 0.005
    assert harsh != plain  # the transform is really in front of the model


def test_bad_params_are_refused_with_their_bounds() -> None:
    for name, values, fragment in [
        ("gaussian-smoothing", {"sigma": -0.1}, "sigma: must be >= 0"),
        ("input-quantization", {"bits": 17}, "bits: must be <= 16"),
        ("feature-squeezing", {"bits": 0}, "bits: must be >= 1"),
        ("jpeg", {"quality": 0}, "quality: must be >= 1"),
        ("jpeg", {"quality": 101}, "quality: must be <= 100"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            make_transform(name, values)
    with pytest.raises(ConfigError, match="did you mean 'jpeg'"):
        make_transform("jpg")


# -- the deployed model ------------------------------------------------------------------------
def test_transforms_compose_in_order_and_stay_out_of_the_weights() -> None:
    model = lenet()
    smooth = make_transform("gaussian-smoothing", {"sigma": 1.0})
    squash = make_transform("input-quantization", {"bits": 1})
    first = Deployed.wrap(model, [smooth])
    both = Deployed.wrap(first, [squash])
    assert [t.name for t in both.transforms] == ["gaussian-smoothing", "input-quantization"]
    assert unwrap(both) is model and transforms_of(model) == ()
    x = torch.rand(6, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(both(x), model(squash(smooth(x))))
        assert not torch.equal(both(x), model(smooth(squash(x))))  # the order matters
    # the classifier's parameters and state, nothing of a learnt transform's
    ae = make_transform("input-reconstruction", {"filters": 4, "channels": 1})
    served = Deployed.wrap(model, [ae])
    assert [id(p) for p in served.parameters()] == [id(p) for p in model.parameters()]
    assert set(served.state_dict()) == {f"inner.{k}" for k in model.state_dict()}
    assert not any(m is ae.net for m in served.modules())


def test_training_goes_straight_through_the_transforms() -> None:
    model = lenet()
    served = Deployed.wrap(model, [make_transform("input-quantization", {"bits": 2})])
    x = torch.rand(3, 1, 28, 28, requires_grad=True)
    served(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # rounding alone has no gradient
    y = make_transform("input-quantization", {"bits": 2})(x.detach()).requires_grad_(True)
    model(y).sum().backward()
    assert torch.allclose(x.grad, y.grad, atol=1e-6)  # the identity's Jacobian (BPDA)
    assert all(p.grad is not None for p in model.parameters())


def test_a_spec_survives_save_and_load_without_unpickling(tmp_path: Path, monkeypatch) -> None:
    model = lenet()
    ae = make_transform("input-reconstruction", {"filters": 3, "channels": 1})
    with torch.no_grad():
        for p in ae.parameters():
            p.uniform_(-0.5, 0.5)
    served = Deployed.wrap(
        model, [make_transform("jpeg", {"quality": 80}), ae, make_transform("median-smoothing")]
    )
    save_model(tmp_path, served, ARCH)
    record = json.loads((tmp_path / DEPLOY_SPEC).read_text())  # plain JSON
    assert record["transforms"] == [
        {"name": "jpeg", "params": {"quality": 80}},
        {"name": "input-reconstruction", "params": {"filters": 3, "channels": 1}},
        {"name": "median-smoothing", "params": {"kernel": 3}},
    ]
    assert (tmp_path / DEPLOY_WEIGHTS).is_file()
    assert json.loads((tmp_path / "model.json").read_text())["name"] == "lenet5"

    def refuse(*args, **kwargs):
        raise AssertionError("a deployed model must never be unpickled")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    loaded, arch = load_model(tmp_path)
    assert arch == ARCH and isinstance(loaded, Deployed)
    assert loaded.spec() == served.spec()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(loaded(x), served(x), atol=1e-6)
    # saving the plain classifier over it leaves no deployment behind
    save_model(tmp_path, unwrap(loaded), ARCH)
    assert not (tmp_path / DEPLOY_SPEC).exists() and not (tmp_path / DEPLOY_WEIGHTS).exists()
    assert not isinstance(load_model(tmp_path)[0], Deployed)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ({"transforms": [{"name": "jpg", "params": {}}]}, "did you mean 'jpeg'"),
        ({"transforms": [{"name": "jpeg", "params": {"quality": 0}}]}, "quality: must be >= 1"),
        ({"transforms": "jpeg"}, "no transforms list"),
        ({"version": 99, "transforms": []}, "version 99"),
        ({"transforms": [{"name": "input-reconstruction", "params": {}}]}, "not found"),
    ],
)
def test_a_corrupt_spec_is_a_run_error(tmp_path: Path, spec: dict, fragment: str) -> None:
    save_model(tmp_path, lenet(), ARCH)
    (tmp_path / DEPLOY_SPEC).write_text(json.dumps(spec))
    with pytest.raises(RunError, match=fragment):
        load_model(tmp_path)


def test_every_transform_keeps_shape_range_and_is_listed() -> None:
    x = images(n=2, channels=3, size=10)
    for plugin in TRANSFORMS:
        params = {"channels": 3, "filters": 2} if plugin.name == "input-reconstruction" else {}
        out = make_transform(plugin.name, params)(x)
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1, plugin.name
        assert plugin.summary, plugin.name


PLUGIN_TRANSFORM = '''
import dataclasses
from engine.registry import param
from engine.transforms import InputTransform, register_transform
from engine.attacks.preprocessing import register_preprocessing


@dataclasses.dataclass(frozen=True)
class InvertParams:
    strength: float = param(1.0, "how far to invert", low=0.0, high=1.0)


@register_transform("fake-invert", InvertParams)
class Invert(InputTransform):
    """Invert every query."""

    def apply(self, x):
        return x + self.params.strength * (1 - 2 * x)


register_preprocessing("fake-invert")
'''


def test_a_plugin_adds_a_transform_and_its_attack(tmp_path: Path, monkeypatch) -> None:
    from importlib.metadata import EntryPoint

    from engine import plugins
    from engine.attacks import ATTACKS, PREPROCESSING, make_attack

    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "fake_wm_invert.py").write_text(PLUGIN_TRANSFORM)
    (tmp_path / "fake_wm_broken.py").write_text(
        PLUGIN_TRANSFORM.replace("fake-invert", "fake-broken") + "\nraise RuntimeError('late')\n"
    )
    group = "wmtui.transforms"
    try:
        problems = plugins.load_entry_points(
            [
                EntryPoint(name="invert", value="fake_wm_invert", group=group),
                EntryPoint(name="broken", value="fake_wm_broken", group=group),
            ]
        )
        assert len(problems) == 1 and "RuntimeError: late" in problems[0]
        assert "fake-broken" not in TRANSFORMS and "fake-broken" not in ATTACKS
        assert ATTACKS.get("fake-invert").family == PREPROCESSING
        with pytest.raises(ConfigError, match=r"strength: must be <= 1\.0"):
            make_attack("fake-invert", {"strength": "2"})
        model = lenet()
        served = Deployed.wrap(model, [make_transform("fake-invert", {"strength": 1.0})])
        x = torch.rand(2, 1, 28, 28)
        with torch.no_grad():
            assert torch.allclose(served(x), model(1 - x), atol=1e-6)
        save_model(tmp_path / "run", served, ARCH)
        assert load_model(tmp_path / "run")[0].spec() == served.spec()
    finally:
        for registry in (TRANSFORMS, ATTACKS):
            for name in ("fake-invert", "fake-broken"):
                registry.unregister(name)
        for module in ("fake_wm_invert", "fake_wm_broken"):
            sys.modules.pop(module, None)
