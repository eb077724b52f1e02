"""``feature-squeezing``: every query is reduced to ``bits`` bits per value, then median-filtered.

Sources: Xu et al., "Feature Squeezing: Detecting Adversarial Examples in Deep Neural
Networks" (NDSS 2018), whose squeezers are bit-depth reduction and a median filter (2x2 on
MNIST and CIFAR-10); WRT ``wrt/attacks/removal/feature_squeezing.py`` implements the bit depth
alone (``rint(x * (2**b - 1)) / (2**b - 1)``), default 4 bits in
``configs/cifar10/attack_configs/feature_squeezing.yaml``. Our defaults: WRT's 4 bits, then
Xu et al.'s 2x2 median (scipy's window placement and "reflect" edges, as median smoothing);
``--kernel 1`` is WRT's squeezer exactly.
"""

from __future__ import annotations

import dataclasses

import torch

from engine.registry import param
from engine.transforms.median_smoothing import median_filter
from engine.transforms.registry import InputTransform, register_transform


@dataclasses.dataclass(frozen=True)
class SqueezingParams:
    bits: int = param(4, "bit depth each value is rounded to", low=1, high=16)
    kernel: int = param(2, "median window after rounding, in pixels (1: none)", low=1, high=15)


def squeeze_bits(x: torch.Tensor, bits: int) -> torch.Tensor:
    top = 2**bits - 1
    return torch.round(x.clamp(0, 1) * top) / top


@register_transform("feature-squeezing", SqueezingParams)
class FeatureSqueezing(InputTransform):
    """Reduce every query's bit depth, then median-filter it (Xu et al.)."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return median_filter(squeeze_bits(x, self.params.bits), self.params.kernel)
