"""Input transforms a stolen model is served behind (docs/deploy.md). One module per
transform; importing the package registers every one in :data:`TRANSFORMS`."""

from __future__ import annotations

from engine.transforms import flipping as _flipping  # noqa: F401  (registers "input-flipping")
from engine.transforms import gaussian as _gaussian  # noqa: F401
from engine.transforms import jpeg as _jpeg  # noqa: F401
from engine.transforms import mean_smoothing as _mean  # noqa: F401
from engine.transforms import median_smoothing as _median  # noqa: F401
from engine.transforms import noising as _noising  # noqa: F401
from engine.transforms import quantization as _quantization  # noqa: F401
from engine.transforms import reconstruction as _reconstruction  # noqa: F401
from engine.transforms import squeezing as _squeezing  # noqa: F401
from engine.transforms.registry import (
    TRANSFORMS,
    InputTransform,
    make_transform,
    register_transform,
    transform_from_spec,
)

__all__ = [
    "TRANSFORMS",
    "InputTransform",
    "make_transform",
    "register_transform",
    "transform_from_spec",
]
