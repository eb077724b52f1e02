"""Shared fixtures: a private data dir (so tests never see datasets installed on the machine)
and small synthetic datasets that go through the same loading code as real data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from engine.data import catalog, load_dataset
from engine.data.idx import write_idx

# One intra-op thread: the models under test are tiny, and OpenMP's spinning threads slow
# them by an order of magnitude whenever another process holds one of CI's two cores.
torch.set_num_threads(1)
# The CLI's thread policy (engine/threads.py) honours it: commands run in-process keep one too.
os.environ["OMP_NUM_THREADS"] = "1"

SMALL_TRAIN, SMALL_TEST = 1024, 256


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session", autouse=True)
def private_session_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fixtures wider than one test (a module's sweep, its spawned workers) start before any
    test's monkeypatch: they get a private cache and demo key too, never the user's threshold
    records (a cached synthetic threshold would turn their `removed` from unknown to False)."""
    names = ("WMTUI_CACHE_DIR", "WMTUI_DEMO_KEY_DIR")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["WMTUI_CACHE_DIR"] = str(tmp_path_factory.mktemp("session-cache"))
    os.environ["WMTUI_DEMO_KEY_DIR"] = str(tmp_path_factory.mktemp("session-demo-key"))
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(autouse=True)
def isolated_data(
    shared_data_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Point every loader at the test's data dir and hide system-wide datasets."""
    monkeypatch.setenv("WMTUI_DATA_DIR", str(shared_data_dir))
    # thresholds and their null models: a fresh cache per test, never the user's
    monkeypatch.setenv("WMTUI_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    # the classroom key pair of `--signing-key demo` stays out of the user's home
    monkeypatch.setenv("WMTUI_DEMO_KEY_DIR", str(shared_data_dir / "demo-key"))
    monkeypatch.setattr(catalog, "SYSTEM_DATA_DIRS", [])
    return shared_data_dir


@pytest.fixture(scope="session")
def small_synthetic(shared_data_dir: Path):
    return load_dataset(
        "synthetic", shared_data_dir, train_size=SMALL_TRAIN, test_size=SMALL_TEST
    ).data


@pytest.fixture(scope="session")
def pattern_run(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> Path:
    """A LeNet-5 on the small synthetic set, watermarked by the ``pattern`` scheme (white
    square -> class 0), with its real ``key/`` folder: attacks and the referee are tested on
    the owner's key, never a stand-in. Built once (a few seconds); tests only read it."""
    from engine.jobs import JobSpec, run

    out = tmp_path_factory.mktemp("pattern") / "run"
    spec = JobSpec.embed(
        "pattern",
        trigger="square",
        target_label=0,
        inject_ratio=0.25,
        out=out,
        dataset="synthetic",
        train_size=SMALL_TRAIN,
        test_size=SMALL_TEST,
        epochs=8,
        optimizer="adam",
        lr=0.003,
        device="cpu",
        data_dir=str(shared_data_dir),
    )
    assert run(spec).status == "completed"
    return out


def write_mnist_style(
    folder: Path, n_train: int = 64, n_test: int = 32, gz: bool = True, seed: int = 0
) -> None:
    """Tiny IDX files in the layout of MNIST / Fashion-MNIST (class c = bright band in row c)."""
    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = torch.randint(0, 10, (n,), generator=gen, dtype=torch.uint8)
        images = torch.randint(0, 40, (n, 28, 28), generator=gen, dtype=torch.uint8)
        for i, c in enumerate(labels.tolist()):
            images[i, 2 + 2 * c : 4 + 2 * c, :] = 250
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


def write_blob_style(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0) -> None:
    """Tiny IDX files of smooth random blobs (7x7 noise upsampled): images a small CNN can
    tell apart and memorise, unlike the banded noise above (unrelated-key tests need that)."""
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        low = torch.rand(n, 1, 7, 7, generator=gen)
        images = F.interpolate(low, size=(28, 28), mode="bilinear") * 255
        labels = torch.randint(0, 10, (n,), generator=gen, dtype=torch.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images.round().to(torch.uint8)[:, 0])
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)


def save_suspect_run(
    folder: Path,
    data_dir: Path,
    model: torch.nn.Module | None = None,
    *,
    train_size: int = 512,
    test_size: int = 128,
) -> Path:
    """A run folder holding ``model`` (a fresh seeded LeNet-5 by default) trained on the
    synthetic set: what a detector or an attack takes as the suspect."""
    from engine.config import TrainConfig
    from engine.models import Architecture, build_model
    from engine.runs import RunDir

    config = TrainConfig(
        dataset="synthetic", train_size=train_size, test_size=test_size, data_dir=str(data_dir)
    )
    run = RunDir.create(folder, {"command": "train", "config": config.to_dict(), "seed": 0})
    arch = Architecture("lenet5", (1, 28, 28), 10)
    if model is None:
        torch.manual_seed(0)
        model = build_model(arch)
    run.save_model(model, arch)
    return run.path
