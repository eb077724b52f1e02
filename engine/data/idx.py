"""Reader for the IDX format of MNIST and Fashion-MNIST (gzipped or not).

We read IDX ourselves rather than through torchvision so that the same code serves the files
torchvision downloads, the ones Debian's ``dataset-fashion-mnist`` package installs, and the
small files the tests write.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import torch

from engine.errors import DataError

_IDX_TYPES = {0x08: torch.uint8}


def read_idx(path: Path) -> torch.Tensor:
    """Parse one IDX file; any corruption becomes a DataError naming the file."""
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise DataError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = 1
    for d in dims:
        expected *= d
    if len(raw) - header != expected:
        raise DataError(
            f"{path}: expected {expected} bytes of data for shape {dims}, found {len(raw) - header}"
        )
    data = torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8)
    return data.reshape(dims)


def write_idx(path: Path, data: torch.Tensor) -> None:
    """Write uint8 data as IDX (gzipped when the name ends in .gz); used by tests and fixtures."""
    data = data.to(torch.uint8).contiguous()
    header = bytes([0, 0, 0x08, data.dim()]) + b"".join(d.to_bytes(4, "big") for d in data.shape)
    payload = header + data.numpy().tobytes()
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)


IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


def find_idx_dir(candidates: list[Path], *, train: bool = True) -> Path | None:
    """The first directory holding all four IDX files, plain or gzipped (only the two test
    files when ``train`` is False: a data-free owner's machine has no training files)."""
    stems = [stem for key, stem in IDX_FILES.items() if train or key.startswith("test")]
    for folder in candidates:
        if all(_locate(folder, stem) for stem in stems):
            return folder
    return None


def idx_files(folder: Path) -> dict[str, Path]:
    """Where each of the four files is (plain or gzipped); a missing one is a DataError."""
    found = {}
    for key, stem in IDX_FILES.items():
        path = _locate(folder, stem)
        if path is None:
            raise DataError(f"{folder}: missing {stem}[.gz]")
        found[key] = path
    return found


def _locate(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_idx_dir(folder: Path, *, train: bool = True) -> dict[str, torch.Tensor]:
    """The four tensors of an MNIST-style folder, checked for matching sizes. Without
    ``train`` the training files are never opened and the training split is empty."""
    parts = {}
    for key, stem in IDX_FILES.items():
        if not train and key.startswith("train"):
            continue
        path = _locate(folder, stem)
        if path is None:
            raise DataError(f"{folder}: missing {stem}[.gz]")
        parts[key] = read_idx(path)
    if not train:
        parts["train_x"] = parts["test_x"][:0]
        parts["train_y"] = parts["test_y"][:0]
    for split in ("train", "test"):
        x, y = parts[f"{split}_x"], parts[f"{split}_y"]
        if x.dim() != 3 or y.dim() != 1 or len(x) != len(y):
            raise DataError(
                f"{folder}: {split} images {tuple(x.shape)} do not match labels {tuple(y.shape)}"
            )
        parts[f"{split}_x"] = x.unsqueeze(1)
        parts[f"{split}_y"] = y.long()
    return parts
