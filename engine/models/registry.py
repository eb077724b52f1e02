"""The model registry, apart from the package so architecture modules can import it."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from engine.registry import Registry

ModelFactory = Callable[[tuple[int, int, int], int], nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")
