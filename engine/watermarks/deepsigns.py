"""``deepsigns``: a signature in the mean activation of a hidden layer (Rouhani, Chen &
Koushanfar, "DeepSigns: An End-to-End Watermarking Framework for Ownership Protection of Deep
Neural Networks", ASPLOS 2019), read with white-box access.

The owner models one hidden layer's activations as a mixture of Gaussians, one per class, and
picks the first ``gaussians`` classes. The key holds an N-bit signature per chosen Gaussian
(b, s x N), a secret projection A (N x M, standard normal; M the layer's output size), the
layer's role, and a few training images of each chosen class (the key images). Embedding adds,
every ``embedding_rate``-th step, a batch of key images trained with
``gamma0 * CE + gamma1 * loss1 + gamma2 * loss2``: loss1 pulls each key image's activation to
its Gaussian's centre mu, loss2 is the cross-entropy of ``sigmoid(A mu)`` against the bits
(:mod:`engine.watermarks.gaussian_mixture`). Reading runs the key images through the suspect,
averages the layer's activations per Gaussian (mu hat), and takes ``A mu_hat > 0`` (the
paper's ``sigmoid > 0.5``); the BER over all s x N bits and its Binomial(T, 1/2) p-value
decide as for ``uchida`` (:mod:`engine.watermarks.white_box`). A model never trained with b
reads bits independent of it: BER about 0.5.

Defaults follow the Watermark-Robustness-Toolbox (``wrt/defenses/watermark/deepsign.py`` and
``configs/cifar10/wm_configs/deepsignwb.yaml`` of dnn-security/Watermark-Robustness-Toolbox):
gamma0 1, gamma1 0.001, gamma2 0.3, embedding rate 10, 10 Gaussians (the first classes, as
WRT takes them), 100 bits per Gaussian, no separation term (``separate_means: false``), no
centre-norm term (its gamma3 is 0), key images max(64, batch size) = 128 per class. Where we
read it differently (:class:`~engine.watermarks.gaussian_mixture.DeepSignsLoss` says why):
the centres are the key batch's own class means by default (``--centres learnt``: WRT's free
variables, learning rate ``mu_lr`` 0.01); loss1 is averaged over images and units and loss2's
logits are divided by sqrt(M), where WRT sums (its sums, on a LeNet-5 without BatchNorm at
our learning rate, sent Fashion-MNIST test accuracy to 10%); one key batch of ``batch_size``
images drawn across all Gaussians joins the step every ``embedding_rate`` steps (WRT takes
three extra optimizer steps, one per random class). The layer: WRT names an index into its
network's list of activations (a 24,576-unit feature map for 10 x 100 bits); ours is a role,
by default the second convolution's output (LeNet-5: 16 x 10 x 10 = 1,600 units), so the key
survives a re-saved or renamed model. Not reproduced: WRT's early stop on the watermark
accuracy.

The key (``RUN/key``, 0600) holds A, b and the key images; none of them is in the model file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from engine.data.base import ImageSet
from engine.data.meta import DatasetMeta
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
from engine.watermarks.gaussian_mixture import CENTRES, DeepSignsLoss, class_means
from engine.watermarks.white_box import (
    LAYER_KINDS,
    LayerRole,
    bit_verdict,
    blank_model,
    check_layer,
    read_bits,
)


@dataclasses.dataclass(frozen=True)
class DeepSignsParams:
    bits: int = param(100, "signature bits per Gaussian N (WRT: 100)", low=1, high=65536)
    gaussians: int = param(
        10,
        "Gaussians carrying bits: the first classes (WRT: 10; at most the classes)",
        low=1,
        high=10**4,
    )
    gamma0: float = param(1.0, "weight of the key images' cross-entropy (WRT: 1)", low=0.0)
    gamma1: float = param(0.001, "weight of the centre loss, loss1 (WRT: 0.001)", low=0.0)
    gamma2: float = param(
        0.3, "weight of the signature loss, loss2 (WRT: 0.3)", low=0.0, low_open=True
    )
    embedding_rate: int = param(
        10, "a key batch every this many steps (WRT: 10)", low=1, high=10**6
    )
    centres: str = param(
        "batch",
        "Gaussian centres: the key batch's class means, or learnt variables as WRT",
        choices=CENTRES,
    )
    mu_lr: float = param(0.01, "learning rate of learnt centres (WRT: 0.01)", low=0.0)
    key_images: int = param(
        128,
        "key images per Gaussian, from the owner's training set (WRT: 128)",
        low=1,
        high=10**5,
    )
    separate_means: bool = param(False, "push the other Gaussians' centres away (WRT: off)")
    layer_kind: str = param(
        "conv", "kind of layer whose output carries the mark", choices=tuple(LAYER_KINDS)
    )
    layer_index: int = param(2, "which layer of that kind, counted from 1", low=1, high=10**4)


def role(params: Any) -> LayerRole:
    return LayerRole(params.layer_kind, params.layer_index)


def gaussian_count(params: Any, classes: int) -> int:
    """The Gaussians a dataset gives: the default 10 shrinks to fewer classes; a number the
    user asked for is checked in ``check_data``."""
    return min(params.gaussians, classes)


@register_scheme("deepsigns", DeepSignsParams)
class DeepSignsScheme(Watermark):
    """N bits per chosen class in a hidden layer's mean activation, read with white-box access."""

    #: verified from the model itself: ``wmtui verify --white-box``
    white_box = True

    def check_data(
        self, params: Any, data: DatasetMeta, given: Mapping[str, Any] | None = None
    ) -> None:
        """An explicit number of Gaussians the dataset has classes for."""
        asked = bool(given) and "gaussians" in {k.replace("-", "_") for k in given or {}}
        if asked and params.gaussians > data.classes:
            raise ConfigError(
                f"--gaussians {params.gaussians}: {data.name} has {data.classes} classes "
                "(one Gaussian per class)"
            )

    def check_model(
        self, params: Any, model: str, shape: tuple[int, int, int], outputs: int
    ) -> None:
        check_layer(role(params), model, shape, outputs)

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        data = ctx.data
        count = gaussian_count(params, data.num_classes)
        gen = generator(ctx.seed, "deepsigns")
        labels = data.train_y.cpu()
        chosen, groups = [], []
        for group in range(count):
            pool = (labels == group).nonzero().flatten()
            if len(pool) == 0:
                raise ConfigError(f"deepsigns: class {group} has no training image to key it")
            pick = pool[torch.randperm(len(pool), generator=gen)[: params.key_images]]
            chosen.append(pick)
            groups.append(torch.full((len(pick),), group, dtype=torch.long))
        index = torch.cat(chosen)
        key_x = data.train_x[index.to(data.train_x.device)].cpu()
        key_groups = torch.cat(groups)
        model = ctx.trained_model or blank_model(
            ctx.model, data.shape, self.num_outputs(params, data.num_classes)
        )
        size = class_means(model, role(params), key_x[:1], key_groups[:1] * 0, 1).shape[1]
        projection = torch.randn(params.bits, size, generator=gen)
        signature = torch.randint(0, 2, (count, params.bits), generator=gen, dtype=torch.uint8)
        tensors = {
            "projection": projection,
            "signature": signature,
            "key_x": key_x,
            "key_groups": key_groups,
            "key_index": index,
        }
        key = self.new_key(params, ctx, tensors)
        key.meta["layer"] = role(params).to_dict()
        key.meta["gaussians"] = count
        ctx.log(
            f"deepsigns: {count} Gaussians x {params.bits} bits in the output of "
            f"{role(params).describe()} ({size} units), {len(key_x)} key images"
        )
        return key

    def training_sources(
        self, key: Key, batch_size: int, device: torch.device, data: ImageSet | None = None
    ) -> list[Source]:
        """Every ``embedding_rate``-th step, a batch of key images trained with the DeepSigns
        term (their labels are their Gaussians, which are their classes)."""
        params = self.params_of(key)
        key_x = key.tensor("key_x", device)
        groups = key.tensor("key_groups", device)
        term = DeepSignsLoss(
            role(params),
            key.tensor("projection", device),
            key.tensor("signature", device),
            key_x,
            groups,
            (params.gamma0, params.gamma1, params.gamma2),
            params.mu_lr,
            params.separate_means,
            params.centres,
        )
        per_batch = min(batch_size, len(key_x))
        return [
            Source("deepsigns", key_x, per_batch, y=groups, loss=term, every=params.embedding_rate)
        ]

    def probes(self, key: Key, data: ImageSet, name: str) -> list[Probe]:
        """No retention line: the mark is not in any answer (the verdict reads the BER)."""
        return []

    def probe(self, key: Key, data: ImageSet, name: str, limit: int = 2000) -> Probe:
        """A plain test image for the trigger preview: the key images are secret."""
        return Probe(name, data.test_x[:1], data.test_y[:1])

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        raise ConfigError(
            "deepsigns is read from the model's hidden activations: it has no key samples to "
            "query (verify it with --white-box)"
        )

    def read(self, model: nn.Module, key: Key) -> torch.Tensor:
        """The s x N bits read from ``model``: ``A mu_hat_k > 0`` for each Gaussian k, flat."""
        params = self.params_of(key)
        layer_role = role(params)
        signature = key.tensor("signature")
        means = class_means(
            model, layer_role, key.tensor("key_x"), key.tensor("key_groups"), len(signature)
        )
        projection = key.tensor("projection").to(means.device)
        if projection.shape[1] != means.shape[1]:
            raise RunError(
                f"the key reads {projection.shape[1]} activations from "
                f"{layer_role.describe()}; this model's has {means.shape[1]}: another "
                "architecture"
            )
        return torch.cat([read_bits(projection, mu) for mu in means])

    def verify(
        self, model: nn.Module, key: Key, data: ImageSet, alpha: float, *, test_acc: bool = True
    ) -> Verdict:
        """BER of the bits read from the key images' mean activations, and its p-value under
        a model never trained with the signature."""
        bits = self.read(model, key)
        acc = None
        if test_acc:
            test = Probe("test", data.test_x, data.test_y, classes=key.num_classes)
            acc = accuracy(model, test)
        return bit_verdict(bits, key.tensor("signature").reshape(-1), alpha, acc)
