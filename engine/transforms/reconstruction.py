"""``input-reconstruction``: every query is passed through a denoising autoencoder first.

Source: WRT ``wrt/attacks/removal/input_reconstruction.py`` and its autoencoder
``wrt/training/models/torch/autoencoder/imagenet_autoencoder.py`` (``CifarAutoencoder``: a
5x5 stride-2 convolution to ``filters`` maps, BatchNorm, ReLU, nearest upsampling back to the
input size, a 5x5 convolution to the image's channels, sigmoid), 128 filters in WRT
``configs/cifar10/attack_configs/input_reconstruction.yaml`` ("complexity"). WRT loads a
pretrained autoencoder; ours is trained on the attacker's data by the attack
(``engine/attacks/input_reconstruction.py``) and its weights are kept in
``deploy.safetensors``. ``channels`` is the image's, recorded so the spec rebuilds the network.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from engine.registry import param
from engine.transforms.registry import InputTransform, register_transform


@dataclasses.dataclass(frozen=True)
class ReconstructionParams:
    filters: int = param(128, "feature maps of the autoencoder's code", low=1, high=1024)
    channels: int = param(3, "channels of the images it reconstructs", low=1, high=64)


class Autoencoder(nn.Module):
    """WRT's CIFAR autoencoder, for any image size and channel count."""

    def __init__(self, channels: int, filters: int) -> None:
        super().__init__()
        self.encode = nn.Conv2d(channels, filters, kernel_size=5, stride=2, padding=2)
        self.norm = nn.BatchNorm2d(filters)
        self.decode = nn.Conv2d(filters, channels, kernel_size=5, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = F.relu(self.norm(self.encode(x)))
        code = F.interpolate(code, size=x.shape[-2:], mode="nearest")
        return torch.sigmoid(self.decode(code))


@register_transform("input-reconstruction", ReconstructionParams)
class InputReconstruction(InputTransform):
    """Pass every query through a denoising autoencoder trained on the attacker's data."""

    learnt = True

    def __init__(self, params: ReconstructionParams) -> None:
        super().__init__(params)
        self.net = Autoencoder(params.channels, params.filters)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
