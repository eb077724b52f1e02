"""Small convolutional classifiers from the papers we reproduce."""

from __future__ import annotations

import torch
from torch import nn

from engine.models.registry import MODELS


def _flat_features(features: nn.Module, in_shape: tuple[int, int, int]) -> int:
    """Size of the flattened feature map, found by one dry run, so any input size works."""
    with torch.no_grad():
        return int(features(torch.zeros(1, *in_shape)).flatten(1).shape[1])


class ConvClassifier(nn.Module):
    """``features`` then ``classifier``: the split fine-tuning attacks address by name."""

    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@MODELS.register("lenet5")
def lenet5(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """LeNet-5 (ReLU, max-pool): the default for 28x28 digits and clothes."""
    c = in_shape[0]
    features = nn.Sequential(
        nn.Conv2d(c, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    flat = _flat_features(features, in_shape)
    classifier = nn.Sequential(
        nn.Linear(flat, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, num_classes)
    )
    return ConvClassifier(features, classifier)


@MODELS.register("digit-cnn")
def digit_cnn(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """2 conv + 2 dense, the null-embedding paper's Digit model (its Table 10)."""
    features = nn.Sequential(
        nn.Conv2d(in_shape[0], 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    flat = _flat_features(features, in_shape)
    classifier = nn.Sequential(nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, num_classes))
    return ConvClassifier(features, classifier)


@MODELS.register("object-cnn")
def object_cnn(in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """6 conv + 3 dense, the null-embedding paper's Object/Traffic model (its Tables 12-13).

    The paper's table lists no padding; with 32x32 inputs only 'same' padding leaves a
    feature map after three poolings, so we use it.
    """
    layers: list[nn.Module] = []
    channels = in_shape[0]
    for width in (32, 64, 128):
        layers += [
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        channels = width
    features = nn.Sequential(*layers)
    flat = _flat_features(features, in_shape)
    classifier = nn.Sequential(
        nn.Linear(flat, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, num_classes)
    )
    return ConvClassifier(features, classifier)
