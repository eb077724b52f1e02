import gzip
from pathlib import Path

import pytest
import torch

from engine.data import catalog, load_dataset, make_splits
from engine.data.idx import read_idx, write_idx
from engine.data.synthetic_render import render_digits
from engine.errors import ConfigError, DataError
from tests.conftest import write_mnist_style


def test_idx_round_trip_plain_and_gzip(tmp_path: Path) -> None:
    data = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "b-idx3-ubyte.gz"):
        write_idx(tmp_path / name, data)
        assert torch.equal(read_idx(tmp_path / name), data)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"garbage!",
        bytes([0, 0, 8, 2, 0, 0, 0, 5, 0, 0, 0, 5]) + b"\x00" * 3,
        gzip.compress(b"\x00\x00", mtime=0),  # no timestamp: each test process collects the same id
    ],
)
def test_corrupt_idx_is_a_data_error(tmp_path: Path, payload: bytes) -> None:
    path = tmp_path / "bad-idx3-ubyte"
    path.write_bytes(payload)
    with pytest.raises(DataError):
        read_idx(path)


def test_fashion_mnist_loads_from_idx_files_in_data_dir(tmp_path: Path) -> None:
    write_mnist_style(tmp_path / "fashion-mnist", n_train=50, n_test=20)
    data = load_dataset("fashion-mnist", tmp_path).data
    assert data.train_x.shape == (50, 1, 28, 28) and data.train_x.dtype == torch.uint8
    assert data.test_y.shape == (20,) and data.num_classes == 10
    assert data.classes[0] == "t-shirt"


def test_fashion_mnist_found_in_system_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where Debian's dataset-fashion-mnist installs it: <system>/fashion-mnist/*.gz."""
    write_mnist_style(tmp_path / "system" / "fashion-mnist")
    monkeypatch.setattr(catalog, "SYSTEM_DATA_DIRS", [tmp_path / "system"])
    loaded = load_dataset("auto", tmp_path / "empty")
    assert loaded.data.name == "fashion-mnist"
    assert "found fashion-mnist" in loaded.reason


def test_torchvision_layout_is_found(tmp_path: Path) -> None:
    write_mnist_style(tmp_path / "MNIST" / "raw", gz=False)
    assert load_dataset("mnist", tmp_path).data.num_classes == 10


def test_auto_prefers_mnist_then_fashion_then_synthetic(tmp_path: Path) -> None:
    loaded = load_dataset("auto", tmp_path, train_size=20, test_size=10)
    assert loaded.data.name == "synthetic" and "no mnist or fashion-mnist" in loaded.reason
    write_mnist_style(tmp_path / "fashion-mnist")
    assert load_dataset("auto", tmp_path).data.name == "fashion-mnist"
    write_mnist_style(tmp_path / "mnist")
    assert load_dataset("auto", tmp_path).data.name == "mnist"


def test_explicit_missing_dataset_never_falls_back(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="wmtui data fetch fashion-mnist"):
        load_dataset("fashion-mnist", tmp_path)
    with pytest.raises(DataError, match="cifar10"):
        load_dataset("cifar10", tmp_path)


def test_mismatched_idx_files_are_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "mnist"
    write_mnist_style(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", torch.zeros(3, dtype=torch.uint8))
    with pytest.raises(DataError, match="do not match"):
        load_dataset("mnist", tmp_path)


def test_synthetic_is_deterministic_and_balanced() -> None:
    x1, y1 = render_digits(200, seed=5)
    x2, y2 = render_digits(200, seed=5)
    x3, _ = render_digits(200, seed=6)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(x1, x3)
    assert x1.shape == (200, 1, 28, 28) and x1.dtype == torch.uint8
    assert torch.bincount(y1, minlength=10).min() >= 15
    # digits are drawn, not blank: real ink in every image, and background mostly dark
    ink = (x1 > 128).flatten(1).float().mean(1)
    assert (ink > 0.03).all() and (ink < 0.5).all()


def test_synthetic_is_cached_on_disk(tmp_path: Path) -> None:
    first = load_dataset("synthetic", tmp_path, train_size=30, test_size=10).data
    cached = list((tmp_path / "wmtui-cache").glob("synthetic-*.safetensors"))
    assert len(cached) == 1
    again = load_dataset("synthetic", tmp_path, train_size=30, test_size=10).data
    assert torch.equal(first.train_x, again.train_x)
    cached[0].write_bytes(b"corrupt")  # a broken cache is rebuilt, not fatal
    assert torch.equal(
        load_dataset("synthetic", tmp_path, train_size=30, test_size=10).data.train_x, first.train_x
    )


def test_splits_are_seeded_and_disjoint() -> None:
    a = make_splits(1000, seed=3, attacker_fraction=0.2, unlabeled_fraction=0.1, key_fraction=0.05)
    b = make_splits(1000, seed=3, attacker_fraction=0.2, unlabeled_fraction=0.1, key_fraction=0.05)
    c = make_splits(1000, seed=4, attacker_fraction=0.2, unlabeled_fraction=0.1, key_fraction=0.05)
    assert torch.equal(a.attacker, b.attacker) and not torch.equal(a.attacker, c.attacker)
    assert len(a.attacker) == 200 and len(a.unlabeled) == 100 and len(a.key) == 45
    assert not set(a.unlabeled.tolist()) & set(a.owner.tolist())
    held_out = make_splits(1000, seed=3, attacker_fraction=0.2, attacker_overlaps_owner=False)
    assert not set(held_out.attacker.tolist()) & set(held_out.owner.tolist())
    with pytest.raises(ConfigError):
        make_splits(10, seed=0, attacker_fraction=1.5)


def test_gzipped_idx_is_unpacked_once_and_a_changed_file_is_read_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.data import idx

    write_mnist_style(tmp_path / "fashion-mnist", n_train=40, n_test=20, seed=1)
    first = load_dataset("fashion-mnist", tmp_path).data
    reads: list[str] = []
    real = idx.read_idx
    monkeypatch.setattr(idx, "read_idx", lambda p: reads.append(p.name) or real(p))
    again = load_dataset("fashion-mnist", tmp_path).data
    assert reads == [] and torch.equal(first.train_x, again.train_x)
    write_mnist_style(tmp_path / "fashion-mnist", n_train=30, n_test=20, seed=2)
    changed = load_dataset("fashion-mnist", tmp_path).data
    assert len(reads) == 4 and len(changed.train_x) == 30
