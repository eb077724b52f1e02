"""``mean-smoothing``: every query is replaced by its ``kernel x kernel`` box average.

Source: WRT ``wrt/attacks/removal/input_smoothing.py`` (``MeanSmoothingPreprocessor``: a box
kernel over each channel of the [0, 1] image, zero padding); default kernel 3 from WRT
``configs/cifar10/attack_configs/input_mean_smoothing.yaml``. That config also fine-tunes 20
epochs afterwards, on raw inputs (WRT's preprocessors are not applied in training); that part
is a chain step of its own here (``--attack mean-smoothing,ft-basic``, which trains through the
transform). WRT refuses even kernels; we take them, placed as scipy places even windows (one
more pixel before the centre than after).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from engine.registry import param
from engine.transforms.registry import InputTransform, register_transform


@dataclasses.dataclass(frozen=True)
class MeanSmoothingParams:
    kernel: int = param(3, "side of the square averaging window, in pixels", low=1, high=15)


def window_padding(kernel: int) -> tuple[int, int]:
    """(before, after) the centre of a ``kernel``-wide window, as scipy.ndimage places it."""
    return kernel // 2, kernel - 1 - kernel // 2


def box_blur(x: torch.Tensor, kernel: int) -> torch.Tensor:
    before, after = window_padding(kernel)
    padded = F.pad(x, (before, after, before, after))
    return F.avg_pool2d(padded, kernel, stride=1, count_include_pad=True)


@register_transform("mean-smoothing", MeanSmoothingParams)
class MeanSmoothing(InputTransform):
    """Average every query over a square window (kernel in pixels)."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.params.kernel == 1 else box_blur(x, self.params.kernel)
