"""``gaussian-smoothing``: every query is blurred by a Gaussian of standard deviation ``sigma``.

Source: WRT ``wrt/attacks/removal/input_smoothing.py`` (``GaussianSmoothingPreprocessor``);
default 0.5 from WRT ``configs/cifar10/attack_configs/input_gaussian_smoothing.yaml`` (0.6 and
0.7 in ``..._smoothing1`` and ``2``).

Our reading of WRT's scale: the images are first mapped back to [0, 1] ("unnormalised"), and
``std`` is the Gaussian's standard deviation in pixels (the spatial axis), not in intensity.
WRT builds a ``k x k`` kernel with ``k = ceil(6 sigma + 1)`` rounded up to odd, filled by
``scipy.ndimage.gaussian_filter`` of a centred delta with ``truncate=3``, i.e. weights
``exp(-d^2 / (2 sigma^2))`` for offsets ``|d| <= int(3 sigma + 0.5)``, normalised per axis,
and convolves each channel with zero padding. We build the same kernel. As
``sigma -> 0`` the kernel is a single 1: the identity (``sigma = 0`` returns the input).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from engine.registry import param
from engine.transforms.registry import InputTransform, register_transform


@dataclasses.dataclass(frozen=True)
class GaussianParams:
    sigma: float = param(
        0.5, "standard deviation of the blur, in pixels of the [0,1] image", low=0.0, high=10.0
    )


def gaussian_kernel(sigma: float) -> torch.Tensor:
    """WRT's 1-D kernel for ``sigma``: odd length ``ceil(6 sigma + 1)``, truncated at
    ``int(3 sigma + 0.5)`` pixels from the centre, summing to 1."""
    size = math.ceil(6 * sigma + 1)
    size += 1 - size % 2
    half = (size - 1) // 2
    radius = int(3 * sigma + 0.5)
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    weights[offsets.abs() > radius] = 0
    return (weights / weights.sum()).float()


def blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Each channel convolved with the outer product of ``kernel`` with itself (WRT's 2-D
    kernel), zero padding as WRT's; one 2-D pass is faster here than two 1-D ones."""
    channels, size = x.shape[1], len(kernel)
    pad = (size - 1) // 2
    k = kernel.to(x.device, x.dtype)
    weight = torch.outer(k, k).expand(channels, 1, size, size)
    return F.conv2d(F.pad(x, (pad, pad, pad, pad)), weight, groups=channels)


@register_transform("gaussian-smoothing", GaussianParams)
class GaussianSmoothing(InputTransform):
    """Blur every query with a Gaussian (sigma in pixels)."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.params.sigma == 0:
            return x
        return blur(x, gaussian_kernel(self.params.sigma))
