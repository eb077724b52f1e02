"""Users' own architectures: ``--model package.module:factory``.

A factory is a callable taking the input shape ``(C, H, W)`` and the class count and returning
an ``nn.Module``, exactly like the registered ones. Its dotted name is what ``model.json``
records, so a run folder reloads it wherever the package can be imported. Only the factory is
imported: weights always come from safetensors (or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path

from torch import nn

from engine.errors import ConfigError

ModelFactory = Callable[[tuple[int, int, int], int], nn.Module]


def is_factory_path(name: str) -> bool:
    """``pkg.module:factory`` names a user's factory; anything else is a registered name."""
    return ":" in name


def import_factory(name: str) -> ModelFactory:
    """The callable behind ``package.module:factory``, importable from the working directory
    too (a user's ``mymodels.py`` beside their runs)."""
    module_name, _, attr = name.partition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ConfigError(f"--model {name!r}: write a factory as package.module:function")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or the module failing as it imports
        raise ConfigError(f"--model {name!r}: cannot import {module_name}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ConfigError(f"--model {name!r}: {module_name} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"--model {name!r}: {attr} is not callable")
    return target  # type: ignore[return-value]


def build_user_model(name: str, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """Call the factory, and refuse anything that is not a module."""
    try:
        model = import_factory(name)(in_shape, num_classes)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"--model {name!r}: the factory failed: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"--model {name!r}: the factory returned {type(model).__name__}, not a torch.nn.Module"
        )
    return model
