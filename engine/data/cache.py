"""Disk cache for datasets that are slow to build (rendered or resized once)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from engine.io import save_tensors


def cached(path: Path, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Load tensors from ``path``, or build and save them; a corrupt cache is rebuilt."""
    if path.is_file():
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError):
            pass
    tensors = build()
    with contextlib.suppress(OSError):  # a read-only cache dir costs time, never correctness
        save_tensors(path, tensors)
    return tensors
