"""Atomic writes, JSON and safetensors: the file helpers every layer uses.

They live apart from :mod:`engine.runs` so that the data layer (which caches decoded datasets
as safetensors) does not import the run layer and, through it, the models. Every write goes to
a temp file in the same folder and is renamed into place, so a crash or a signal mid-write
never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from engine.errors import RunError


def atomic_write_bytes(path: Path, data: bytes, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any, mode: int | None = None) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, allow_nan=False) + "\n").encode(), mode)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], mode: int | None = None) -> None:
    """safetensors, atomically (serialised in memory, then written through a temp file)."""
    payload = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, payload, mode)


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{what} not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise RunError(f"{what} is corrupt: {path} ({exc})") from None


def load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise RunError(f"{what} not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise RunError(f"{what} is corrupt or not safetensors: {path} ({exc})") from None
