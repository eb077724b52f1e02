"""``uchida``: a signature in the weights (Uchida, Nagai, Sakazawa & Satoh, "Embedding
Watermarks into Deep Neural Networks", ICMR 2017).

The owner draws a T-bit signature b and a secret projection X (T x D, standard normal), and
trains with a regulariser on one convolution's kernel: ``lambda * sum_j BCE(sigmoid(X w), b)``,
w the kernel averaged over its output filters and flattened (D = in-channels x kernel area).
Reading the mark needs the weights, not queries: the bits are ``X w > 0``, their bit error rate
against b decides (:mod:`engine.watermarks.white_box`), and a model never trained with X reads
fair coins (BER about 0.5).

Defaults follow the Watermark-Robustness-Toolbox (``wrt/defenses/watermark/uchida.py`` and
``configs/cifar10/wm_configs/uchida.yaml`` of dnn-security/Watermark-Robustness-Toolbox): 100
bits, lambda 0.01 (the class's default and the paper's; WRT's CIFAR-10 config uses 0.1, which
cost a Fashion-MNIST LeNet-5 2.3 points of test accuracy against 0.75 at 0.01, one seed), the
sum rather than the mean over bits as WRT notes the paper does, and the second convolution
(WRT's ``layer_idx`` 8 is conv2 of its network). The layer is named by role, "the n-th
conv", so the key survives a re-saved or renamed model. Embedding goes through the one
training loop as a source with no images whose loss term is the regulariser; from scratch or
``--from`` a trained model (the paper fine-tunes the mark in). Not reproduced: WRT's early
stop once the BER reaches 0.

X and b are the key (``RUN/key``, 0600), never in the model file.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.data.base import ImageSet
from engine.errors import ConfigError, RunError
from engine.metrics import Probe, Verdict, accuracy
from engine.registry import param
from engine.training import Source
from engine.watermarks.base import (
    Key,
    KeyContext,
    KeySamples,
    Watermark,
    generator,
    register_scheme,
)
from engine.watermarks.white_box import (
    LAYER_KINDS,
    LayerRole,
    bit_verdict,
    blank_model,
    check_layer,
    find_layer,
    mean_weights,
    read_bits,
)


@dataclasses.dataclass(frozen=True)
class UchidaParams:
    bits: int = param(100, "signature length T in bits (the paper: 64-256)", low=1, high=65536)
    strength: float = param(0.01, "regulariser weight lambda (WRT: 0.01-0.1)", low=0.0)
    layer_kind: str = param("conv", "kind of layer carrying the mark", choices=tuple(LAYER_KINDS))
    layer_index: int = param(2, "which layer of that kind, counted from 1", low=1, high=10**4)


def role(params: Any) -> LayerRole:
    return LayerRole(params.layer_kind, params.layer_index)


class Regulariser:
    """The loop's loss term (``Source.loss``): ``strength * sum_j BCE(sigmoid(X w), b)``.
    Data-independent: the source's (empty) batch is ignored; the layer is looked up on the
    model the loop trains, by role."""

    def __init__(
        self, role: LayerRole, projection: torch.Tensor, signature: torch.Tensor, strength: float
    ) -> None:
        self.role = role
        self.projection = projection
        self.signature = signature.float()
        self.strength = strength

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        w = mean_weights(find_layer(model, self.role)).float()
        logits = self.projection.to(w) @ w
        bce = F.binary_cross_entropy_with_logits(logits, self.signature.to(w), reduction="sum")
        return self.strength * bce


@register_scheme("uchida", UchidaParams)
class UchidaScheme(Watermark):
    """A T-bit signature in one layer's mean kernel, read with white-box access."""

    #: verified from the weights: ``wmtui verify --white-box``
    white_box = True

    def check_model(
        self, params: Any, model: str, shape: tuple[int, int, int], outputs: int
    ) -> None:
        check_layer(role(params), model, shape, outputs)

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        data = ctx.data
        outputs = self.num_outputs(params, data.num_classes)
        model = ctx.trained_model or blank_model(ctx.model, data.shape, outputs)
        size = mean_weights(find_layer(model, role(params))).numel()
        gen = generator(ctx.seed, "uchida")
        projection = torch.randn(params.bits, size, generator=gen)
        signature = torch.randint(0, 2, (params.bits,), generator=gen, dtype=torch.uint8)
        key = self.new_key(params, ctx, {"projection": projection, "signature": signature})
        key.meta["layer"] = role(params).to_dict()
        return key

    def training_sources(
        self, key: Key, batch_size: int, device: torch.device, data: ImageSet | None = None
    ) -> list[Source]:
        """One source with no images: every step adds the regulariser."""
        params = self.params_of(key)
        empty = torch.zeros((0, *key.meta["in_shape"]), device=device)
        term = Regulariser(
            role(params),
            key.tensor("projection", device),
            key.tensor("signature", device),
            params.strength,
        )
        no_labels = torch.zeros(0, dtype=torch.long, device=device)
        return [Source("uchida", None, 0, y=no_labels, draw=lambda step: empty, loss=term)]

    def probes(self, key: Key, data: ImageSet, name: str) -> list[Probe]:
        """No retention line: the mark is not in any answer (the verdict reads the BER)."""
        return []

    def probe(self, key: Key, data: ImageSet, name: str, limit: int = 2000) -> Probe:
        """A plain test image, for the trigger preview: this key has no trigger to show."""
        return Probe(name, data.test_x[:1], data.test_y[:1])

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        raise ConfigError(
            "uchida is read from the model's weights: it has no key samples to query "
            "(verify it with --white-box)"
        )

    def read(self, model: nn.Module, key: Key) -> torch.Tensor:
        """The bits the key's projection reads from ``model``'s layer."""
        params = self.params_of(key)
        layer_role = role(params)
        w = mean_weights(find_layer(model, layer_role)).detach().float()
        projection = key.tensor("projection")
        if projection.shape[1] != w.numel():
            raise RunError(
                f"the key reads {projection.shape[1]} weights from {layer_role.describe()}; "
                f"this model's has {w.numel()}: another architecture"
            )
        return read_bits(projection.to(w.device), w)

    def verify(
        self, model: nn.Module, key: Key, data: ImageSet, alpha: float, *, test_acc: bool = True
    ) -> Verdict:
        """BER of the bits read from the weights, and its p-value under random weights."""
        bits = self.read(model, key)
        acc = None
        if test_acc:
            test = Probe("test", data.test_x, data.test_y, classes=key.num_classes)
            acc = accuracy(model, test)
        return bit_verdict(bits, key.tensor("signature"), alpha, acc)
