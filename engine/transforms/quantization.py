"""``input-quantization``: every pixel value is mapped to the centre of one of ``2**bits`` bins.

Source: WRT ``wrt/attacks/removal/input_quantization.py`` (the [0, 1] range split into
``num_divisions`` equal bins, each value replaced by its bin's centre); default 4 bits, WRT's
``num_divisions: 16`` in ``configs/cifar10/attack_configs/input_quantization.yaml`` (12 and 10
divisions in ``input_quantization1`` and ``2`` are not powers of two). WRT's loop leaves the
top bin unchanged (it stops one bin short); we map it to its centre too, so at ``b`` bits an
image holds at most ``2**b`` distinct values.
"""

from __future__ import annotations

import dataclasses

import torch

from engine.registry import param
from engine.transforms.registry import InputTransform, register_transform


@dataclasses.dataclass(frozen=True)
class QuantizationParams:
    bits: int = param(4, "bits per pixel value: 2**bits equal bins over [0,1]", low=1, high=16)


def quantize(x: torch.Tensor, bits: int) -> torch.Tensor:
    levels = 2**bits
    bins = (x.clamp(0, 1) * levels).floor().clamp(max=levels - 1)
    return (bins + 0.5) / levels


@register_transform("input-quantization", QuantizationParams)
class InputQuantization(InputTransform):
    """Quantise every pixel value to 2**bits bin centres."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x, self.params.bits)
