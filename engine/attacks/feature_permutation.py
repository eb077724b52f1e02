"""``feature-permutation``: shuffle the hidden units of every layer whose outputs only one
next layer reads, and that layer's inputs to match. The model computes the same function.

Lukas et al., "SoK: How Robust is Image Classification Deep Neural Network Watermarking?",
IEEE S&P 2022; WRT ``wrt/attacks/removal/feature_shuffling.py`` and
``configs/cifar10/attack_configs/feature_shuffling.yaml`` (no parameters, no training). WRT
shuffles the hidden activations its classifier reports to a white-box verifier; we do the
same in weight space, which is what a thief holding the file can do: permuting a conv's
filters (or a linear layer's rows), their biases and the following BatchNorm's entries, and
the next layer's input channels (or columns, block by block across a flatten) the same way,
leaves every output unchanged while every weight a white-box scheme reads moves elsewhere.

Units are permuted where a layer feeds the next through element-wise layers, pooling,
BatchNorm or a flatten only: every hidden layer of the built-in ``features``/``classifier``
classifiers, and the inner convolution of each ResNet block (its outer channels are shared
by the residual stream, which stays in place). A model without those parts is refused with
one line. A deployed model (``engine.deploy``) has its classifier permuted, its transforms kept.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.registry import (
    MODIFICATION,
    Attack,
    AttackEnv,
    AttackResult,
    register_attack,
)
from engine.deploy import unwrap
from engine.errors import ConfigError
from engine.models import Architecture
from engine.models.resnet import BasicBlock

#: layers between a producer and its consumer that act on each unit alone
PASS_THROUGH = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.Dropout,
    nn.Identity,
)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
WEIGHTED = (nn.Conv2d, nn.Linear)


@dataclasses.dataclass(frozen=True)
class FeaturePermutationParams:
    """No parameters (WRT has none); the permutation is drawn from the attacker's seed."""


@dataclasses.dataclass
class Link:
    """A producer whose units one consumer reads, and the BatchNorms between them."""

    producer: nn.Module
    norms: list[nn.Module]
    consumer: nn.Module


def chain_links(modules: list[nn.Module]) -> list[Link]:
    """Producer -> consumer pairs along a chain of modules (``None`` marks a flatten)."""
    links: list[Link] = []
    producer: nn.Module | None = None
    norms: list[nn.Module] = []
    for module in modules:
        if isinstance(module, WEIGHTED):
            if producer is not None:
                links.append(Link(producer, norms, module))
            producer, norms = module, []
        elif module is None or isinstance(module, (nn.Flatten, *PASS_THROUGH)):
            continue
        elif isinstance(module, NORMS) and producer is not None:
            norms.append(module)
        else:  # a residual block or anything unknown: its inputs stay where they are
            producer, norms = None, []
    return links


def links_of(model: nn.Module) -> list[Link]:
    """Every permutable link of ``model``; refuses a model it cannot walk."""
    features = getattr(model, "features", None)
    classifier = getattr(model, "classifier", None)
    if not isinstance(features, nn.Sequential) or not isinstance(classifier, nn.Sequential):
        raise ConfigError(
            f"feature-permutation walks models made of features and classifier layers (the "
            f"built-in architectures); {type(model).__name__} is not one"
        )
    links = chain_links([*features, None, *classifier])
    for block in model.modules():
        if isinstance(block, BasicBlock):
            links.append(Link(block.conv1, [block.bn1], block.conv2))
    # a grouped convolution reads its inputs in groups: permuting across them changes it
    links = [
        k for k in links if all(getattr(m, "groups", 1) == 1 for m in (k.producer, k.consumer))
    ]
    if not links:
        raise ConfigError(f"feature-permutation: {type(model).__name__} has no hidden units")
    return links


def _permute_rows(module: nn.Module, order: torch.Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        tensor = getattr(module, name, None)
        if tensor is not None:
            tensor.data = tensor.data[order].clone()


def _permute_inputs(consumer: nn.Module, order: torch.Tensor) -> None:
    w = consumer.weight.data
    units = len(order)
    if isinstance(consumer, nn.Conv2d) or w.shape[1] == units:
        consumer.weight.data = w[:, order].clone()
        return
    if w.shape[1] % units:
        raise ConfigError(
            f"feature-permutation: {w.shape[1]} inputs do not split into {units} channels"
        )
    blocks = w.view(w.shape[0], units, w.shape[1] // units)  # flatten is channel-major
    consumer.weight.data = blocks[:, order].reshape_as(w).clone()


@torch.no_grad()
def permute_units(model: nn.Module, generator: torch.Generator) -> int:
    """Apply one random permutation per link in place; returns the units permuted."""
    moved = 0
    for link in links_of(model):
        units = link.producer.weight.shape[0]
        order = torch.randperm(units, generator=generator).to(link.producer.weight.device)
        for module in (link.producer, *link.norms):
            _permute_rows(module, order)
        _permute_inputs(link.consumer, order)
        moved += units
    return moved


@register_attack("feature-permutation", FeaturePermutationParams, family=MODIFICATION)
class FeaturePermutation(Attack[FeaturePermutationParams]):
    """Shuffle hidden units with their next layer: same outputs, weights moved (WRT)."""

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        generator = torch.Generator().manual_seed(data.seed)
        units = permute_units(unwrap(model), generator)  # a deployed model keeps its transforms
        env.log(f"permuted {units} hidden units; the model's outputs are unchanged")
        return AttackResult(model, arch, 0, {"units": units})
