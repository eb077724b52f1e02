"""``median-smoothing``: every pixel of every query becomes the median of its window.

Source: WRT ``wrt/attacks/removal/input_smoothing.py`` (``MedianSmoothingPreprocessor``:
``scipy.ndimage.median_filter`` with size ``(1, 1, k, k)`` and ``mode="reflect"``); default
kernel 3 from WRT ``configs/cifar10/attack_configs/input_median_smoothing.yaml`` (whose 20
fine-tuning epochs are a chain step here, as for mean smoothing). We reproduce scipy's
semantics exactly: "reflect" mirrors about the edge, the edge pixel included, and an even
window takes the upper of its two middle values (rank ``k*k // 2``). Feature squeezing reuses
:func:`median_filter`.
"""

from __future__ import annotations

import dataclasses

import torch

from engine.registry import param
from engine.transforms.mean_smoothing import window_padding
from engine.transforms.registry import InputTransform, register_transform


@dataclasses.dataclass(frozen=True)
class MedianSmoothingParams:
    kernel: int = param(3, "side of the square median window, in pixels", low=1, high=15)


def reflect_index(n: int, before: int, after: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-``n`` axis padded by scipy's "reflect" (d c b a | a b c d | d c)."""
    idx = torch.arange(-before, n + after, device=device) % (2 * n)
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def median_filter(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """scipy.ndimage.median_filter over each channel's ``kernel x kernel`` windows."""
    if kernel == 1:
        return x
    before, after = window_padding(kernel)
    height, width = x.shape[-2:]
    rows = reflect_index(height, before, after, x.device)
    cols = reflect_index(width, before, after, x.device)
    padded = x[..., rows, :][..., cols]
    windows = padded.unfold(-2, kernel, 1).unfold(-2, kernel, 1)  # N,C,H,W,k,k
    flat = windows.reshape(*windows.shape[:4], kernel * kernel)
    if kernel % 2:  # an odd count has one middle value: torch's median, faster than a sort
        return flat.median(dim=-1).values
    return flat.sort(dim=-1).values[..., (kernel * kernel) // 2]


@register_transform("median-smoothing", MedianSmoothingParams)
class MedianSmoothing(InputTransform):
    """Replace every pixel by the median of its window (kernel in pixels)."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(x, self.params.kernel)
