"""``input-flipping``: every query is mirrored left to right.

Source: WRT ``wrt/attacks/removal/input_horizontal_flipping.py`` (``np.fliplr`` along the
width axis) and ``configs/cifar10/attack_configs/input_flipping.yaml``, which takes no
parameters. It removes watermarks whose trigger sits on one side of the image, and costs a
model trained with horizontal-flip augmentation almost nothing.
"""

from __future__ import annotations

import dataclasses

import torch

from engine.transforms.registry import InputTransform, register_transform


@dataclasses.dataclass(frozen=True)
class FlippingParams:
    """No parameters: a flip is a flip."""


@register_transform("input-flipping", FlippingParams)
class InputFlipping(InputTransform):
    """Mirror every query horizontally."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(-1)
