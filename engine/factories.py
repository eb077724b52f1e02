"""A user's own code named as ``package.module:function``: ``--model`` and ``--dataset``.

Apart from both layers that use it (models, data), which may not import each other.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, UserError


def import_callable(
    spec: str, flag: str, error: type[UserError] = ConfigError
) -> Callable[..., Any]:
    """The callable behind ``spec``, importable from the working directory too (a user's
    ``mymodels.py`` beside their runs). Every failure is one ``error`` line naming ``flag``."""
    module_name, _, attr = spec.partition(":")
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.append(cwd)
    try:
        target: object = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or the module failing as it imports
        raise error(f"{flag} {spec!r}: cannot import {module_name}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(target, part):
            raise error(f"{flag} {spec!r}: {module_name} has no {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise error(f"{flag} {spec!r}: {attr} is not callable")
    return target
