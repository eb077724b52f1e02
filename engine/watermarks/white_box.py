"""White-box reading of a model: a layer named by its role, and the bit error rate of a
signature read from its weights, with the p-value of that rate for a model never given the key.

A white-box key must outlive the model file it was made for: a thief re-saves the weights,
wraps the classifier, or renames its modules, and a key that named ``features.3.weight``
would then find nothing. So a key names its layer by role, "the n-th convolution" or "the
n-th dense layer", counted in ``model.modules()`` order (definition order), which wrapping
and renaming leave alone. A served model is read behind its deployment transforms.

The p-value is the chance that a model not trained with the key makes at most the observed
number of bit errors: the bits a secret random projection reads from weights that never saw
it are fair coins, independent of the signature, so the errors are Binomial(T, 1/2). It is
computed by the same exact binomial tail as every black-box verdict (``chance`` 1/2), so a
white-box ``Verdict`` reads like the others: ``retention`` is the share of bits read right,
``ber`` the share read wrong, ``n_key`` the number of bits.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from torch import nn

from engine.deploy import unwrap
from engine.errors import ConfigError
from engine.metrics import Verdict, make_verdict
from engine.models import Architecture, build_model

#: module types each role counts (Conv2d only: 1-D and 3-D kernels average differently)
LAYER_KINDS: dict[str, tuple[type[nn.Module], ...]] = {
    "conv": (nn.Conv2d,),
    "linear": (nn.Linear,),
}


@dataclasses.dataclass(frozen=True)
class LayerRole:
    """The ``index``-th (from 1) layer of ``kind`` in definition order."""

    kind: str
    index: int

    def __post_init__(self) -> None:
        if self.kind not in LAYER_KINDS:
            raise ConfigError(
                f"layer kind {self.kind!r}: choose one of {', '.join(sorted(LAYER_KINDS))}"
            )
        if self.index < 1:
            raise ConfigError(f"layer index {self.index}: layers are counted from 1")

    def describe(self) -> str:
        return f"{self.kind} layer {self.index}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "index": self.index}


def layers_of(model: nn.Module, kind: str) -> list[nn.Module]:
    """The classifier's layers of ``kind`` in definition order (module names play no part)."""
    return [m for m in unwrap(model).modules() if isinstance(m, LAYER_KINDS[kind])]


def find_layer(model: nn.Module, role: LayerRole) -> nn.Module:
    """The layer ``role`` names; a model with fewer such layers is one ConfigError line."""
    layers = layers_of(model, role.kind)
    if role.index > len(layers):
        raise ConfigError(
            f"layer {role.kind} {role.index}: the model has {len(layers)} {role.kind} "
            f"layer{'s' if len(layers) != 1 else ''}"
        )
    return layers[role.index - 1]


def mean_weights(layer: nn.Module) -> torch.Tensor:
    """Uchida's w: the kernel averaged over output filters and flattened (a dense layer's
    weight rows averaged the same way). Averaging makes the carrier independent of how many
    filters the layer has and of their order; a permutation of its *input* channels (the
    previous layer's units) still reorders it."""
    weight = layer.weight  # type: ignore[union-attr]
    assert isinstance(weight, torch.Tensor)
    return weight.mean(0).reshape(-1)


def read_bits(projection: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The bits ``projection @ weights > 0`` as 0/1 integers (a zero reads as 0)."""
    with torch.no_grad():
        return (projection.to(weights) @ weights > 0).long()


def bit_verdict(
    bits: torch.Tensor, signature: torch.Tensor, alpha: float, test_acc: float | None = None
) -> Verdict:
    """The verdict of bits read against the owner's signature: BER, and its p-value under
    "read from a model never trained with this key" (Binomial(T, 1/2) errors)."""
    signature = signature.reshape(-1).long().to(bits.device)
    if len(signature) == 0 or bits.shape != signature.shape:
        raise ValueError(f"{len(bits)} bits read for a {len(signature)}-bit signature")
    right = int((bits == signature).sum())
    verdict = make_verdict(
        right,
        len(signature),
        chance=0.5,
        alpha=alpha,
        test_acc=test_acc,
    )
    verdict.null_reason = "random weights: each bit a fair coin"
    verdict.ber = (len(signature) - right) / len(signature)
    return verdict


def is_white_box(scheme: object) -> bool:
    """Whether a scheme is verified from the weights (``verify --white-box``)."""
    return bool(getattr(scheme, "white_box", False))


def blank_model(model: str, shape: tuple[int, int, int], outputs: int) -> nn.Module:
    """An untrained instance to find a layer on, without moving the global RNG (keygen must
    not change the weights a seed gives)."""
    with torch.random.fork_rng(devices=[]):
        return build_model(Architecture(model, tuple(shape), outputs))  # type: ignore[arg-type]


def check_layer(layer: LayerRole, model: str, shape: tuple[int, int, int], outputs: int) -> None:
    """The chosen layer exists in this architecture, checked before any folder exists; an
    architecture that cannot be built fails later, as for any scheme."""
    _check_layer(layer, model, tuple(shape), outputs)


@functools.lru_cache(maxsize=256)
def _check_layer(layer: LayerRole, model: str, shape: tuple[int, ...], outputs: int) -> None:
    """Remembered per architecture: a recipe checks the same one for every trial (``sok``:
    234 times), and building a model to look at costs a forward pass."""
    try:
        blank = blank_model(model, shape, outputs)  # type: ignore[arg-type]
    except ConfigError:
        raise
    except Exception:
        return
    find_layer(blank, layer)
