"""ResNet-18 with the CIFAR stem (3x3 conv, no max-pool), as used for 32x32 inputs."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.registry import MODELS


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            *self._stage(64, 64, 1),
            *self._stage(64, 128, 2),
            *self._stage(128, 256, 2),
            *self._stage(256, 512, 2),
            nn.AdaptiveAvgPool2d(1),
        )
        self.classifier = nn.Sequential(nn.Linear(512, num_classes))

    @staticmethod
    def _stage(cin: int, cout: int, stride: int) -> list[nn.Module]:
        return [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@MODELS.register("resnet18")
def resnet18(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """ResNet-18, CIFAR stem; works on 28x28 too thanks to the global pooling."""
    return ResNet18(in_shape[0], num_classes)
