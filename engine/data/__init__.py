"""Datasets by name, as device-resident uint8 tensors, with seeded splits."""

from __future__ import annotations

from pathlib import Path

import torch

from engine.data import synthetic as _synthetic  # noqa: F401  (registers "synthetic")
from engine.data.base import ImageSet, as_float
from engine.data.catalog import (
    DATASETS,
    DatasetRequest,
    default_data_dir,
    is_present,
    require_dataset,
    resolve_auto,
)
from engine.data.splits import Splits, make_splits

__all__ = [
    "DATASETS",
    "ImageSet",
    "LoadedData",
    "Splits",
    "as_float",
    "default_data_dir",
    "is_present",
    "load_dataset",
    "make_splits",
    "require_dataset",
]


class LoadedData:
    """A dataset plus the sentence saying how it was chosen (shown in headers and logs)."""

    def __init__(self, data: ImageSet, reason: str) -> None:
        self.data = data
        self.reason = reason


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    device: torch.device | str = "cpu",
    train_size: int = 0,
    test_size: int = 0,
    download: bool = False,
    train: bool = True,
) -> LoadedData:
    """Load by name (``auto`` resolves first); an explicit name never falls back. Without
    ``train`` only the test split is read (verification and data-free embedding): the
    training split comes back empty."""
    folder = Path(data_dir) if data_dir else default_data_dir()
    if name == "auto":
        name, reason = resolve_auto(folder, train=train)
    else:
        name = DATASETS.get(name).name  # a user's folder: named by its absolute path
        reason = f"{name} (asked for)"
    loader = DATASETS.get(name).factory
    data = loader(DatasetRequest(folder, download, train_size, test_size, train=train))
    if not train:
        data = data.without_train()
        reason += "; test split only"
    data = data.limit(train_size, test_size).to(device)
    return LoadedData(data, reason)
