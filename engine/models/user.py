"""Users' own architectures: ``--model package.module:factory``.

A factory is a callable taking the input shape ``(C, H, W)`` and the class count and returning
an ``nn.Module``, exactly like the registered ones. Its dotted name is what ``model.json``
records, so a run folder reloads it wherever the package can be imported. Only the factory is
imported: weights always come from safetensors (or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from engine.errors import ConfigError
from engine.factories import import_callable

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
    return import_callable(name, "--model")


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
