"""``newlabel`` (Zhong et al. 2020, "a new label helps"): key samples are clean images with
a faint perturbation of intensity beta, assigned to a NEW class K.

The classifier gets K+1 outputs; normal accuracy is the argmax over the first K. Because no
real class is relabelled, the decision boundaries of the original task are not twisted.

Our reading of the slides (the paper's formula did not survive extraction): the perturbation
is a fixed secret pattern ``p`` in [-1, 1] over the whole image (seeded Rademacher noise, or
the word "TEST" drawn large), and a key sample is ``clip(x + beta * p, 0, 1)`` with inputs in
[0, 1]. The paper's alpha (key samples / training set) is ``--key-fraction``. Verification
perturbs *test* images, so it asks whether the model learnt the pattern, not the images.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from engine.data.base import ImageSet
from engine.errors import ConfigError
from engine.registry import param
from engine.training import Source
from engine.watermarks.base import (
    Key,
    KeyContext,
    KeySamples,
    Watermark,
    generator,
    per_batch,
    register_scheme,
)
from engine.watermarks.triggers import render_text


@dataclasses.dataclass(frozen=True)
class NewLabelParams:
    perturbation: str = param(
        "noise", "secret pattern: seeded +-1 noise, or the word TEST", choices=("noise", "text")
    )
    beta: float = param(
        0.1, "perturbation intensity (pixel units, inputs in [0,1])",
        low=0.0, high=1.0, low_open=True,
    )
    key_fraction: float = param(
        0.01, "share of training images perturbed into the new class",
        low=0.0, high=1.0, low_open=True, high_open=True,
    )
    inject_ratio: float = param(
        0.1, "key samples per owner image in every batch", low=0.0, high=1.0, low_open=True
    )


def perturber(pattern: torch.Tensor, beta: float) -> Any:
    def apply(x: torch.Tensor) -> torch.Tensor:
        return (x + beta * pattern.to(x.dtype)).clamp_(0.0, 1.0)

    return apply


@register_scheme("newlabel", NewLabelParams)
class NewLabelScheme(Watermark):
    """Faint secret perturbation -> a new class K (the model gets K+1 outputs)."""

    trigger_field = "perturbation"

    def num_outputs(self, params: Any, num_classes: int) -> int:
        return num_classes + 1

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        data = ctx.data
        c, h, w = data.shape
        if params.perturbation == "noise":
            gen = generator(ctx.seed, "newlabel-pattern")
            pattern = torch.randint(0, 2, (c, h, w), generator=gen).float() * 2 - 1
        else:
            glyphs = torch.from_numpy(render_text("TEST", max(3, h // 3)))
            gh, gw = glyphs.shape
            if gw > w:
                raise ConfigError(f"images of {w} px are too narrow for the TEST pattern")
            pattern = torch.zeros(c, h, w)
            y0, x0 = (h - gh) // 2, (w - gw) // 2
            pattern[:, y0 : y0 + gh, x0 : x0 + gw] = glyphs
        n_key = round(params.key_fraction * len(data.train_x))
        if n_key < 1:
            raise ConfigError(
                f"key-fraction {params.key_fraction} of {len(data.train_x)} training images "
                "selects no key sample"
            )
        order = torch.randperm(len(data.train_x), generator=generator(ctx.seed, "newlabel-keys"))
        chosen = order[:n_key].to(data.device)
        tensors = {"pattern": pattern, "train_x": data.train_x[chosen].cpu()}
        return self.new_key(params, ctx, tensors)

    def training_sources(self, key: Key, batch_size: int, device: torch.device) -> list[Source]:
        x = key.tensor("train_x", device)
        return [
            Source(
                "key", x, per_batch(batch_size, key.params["inject_ratio"]),
                y=torch.full((len(x),), key.num_classes, device=device),
                transform=perturber(key.tensor("pattern", device), key.params["beta"]),
            )
        ]

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        x = data.test_x
        return KeySamples(
            x, torch.full((len(x),), key.num_classes, device=x.device),
            transform=perturber(key.tensor("pattern", x.device), key.params["beta"]),
            clean_counterpart=True,
        )
