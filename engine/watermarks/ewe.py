"""``ewe``: entangled watermarks (Jia, Choquette-Choo, Chandrasekaran & Papernot, "Entangled
Watermarks as a Defense against Model Extraction", USENIX Security 2021).

A trigger on images of a source class makes the model answer a target class, as a pattern
key does; what differs is how it is learnt. Watermark batches mix key samples (source images
with the trigger) and clean images of the target class, all trained towards the target, and
their loss subtracts a multiple of the soft nearest-neighbour loss between the two groups on
every hidden layer (:mod:`engine.watermarks.snnl`): the key is pushed to share the features
the target class is recognised by, so a model extracted from the marked one's answers on
clean data learns those features and, with them, the key.

Defaults are the Watermark-Robustness-Toolbox's (``configs/cifar10/wm_configs/jia.yaml`` and
``wrt/defenses/watermark/jia.py`` of dnn-security/Watermark-Robustness-Toolbox): SNNL weight
64, 100 key samples from source class 4 and 100 target images of class 6, the trigger a white
5x5 square with its top-left pixel at (2, 2). The distance and temperatures are the reference
code's Fashion-MNIST defaults (``train.py`` of cleverhans-lab/entangled-watermark: cosine,
initial temperature 1, learning rate 0.1): WRT's (Euclidean, 64, 0.01) make every neighbour
weight of a LeNet-5's 28x28 feature maps underflow, and the SNNL, stuck at its ceiling, drove
a synthetic-digit run to 10% test accuracy (docs: entangled watermarks, measured).
A watermark batch follows every ``alternating_rate`` (2) clean batches,
the ratio the paper's reference code uses on Fashion-MNIST (its ``--ratio 2``); WRT alternates
batch-norm modes at that rate and interleaves one watermark batch per ``rate`` (30) clean
ones. Not reproduced: the reference code's search for the trigger's position and its
perturbation of key samples along the SNNL gradient (WRT omits both too), and WRT's early
stopping on the watermark loss.

Verification is shared (:meth:`Watermark.verify`): the trigger stamped on held-out *test*
images of the source class, claimed as the target; the null is how the model labels the same
images without the trigger (a model that calls the source class the target anyway proves
nothing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from engine.data.base import ImageSet, as_float
from engine.data.meta import DatasetMeta
from engine.errors import ConfigError
from engine.registry import param
from engine.training import Source
from engine.watermarks.base import (
    Key,
    KeyContext,
    KeySamples,
    Watermark,
    check_label,
    generator,
    register_scheme,
)
from engine.watermarks.snnl import METRICS, EntanglementLoss
from engine.watermarks.triggers import TriggerSpec, make_trigger, parse_position, stamp, stamper

#: the trigger's kind: WRT's solid white square
TRIGGER = TriggerSpec("square")


@dataclasses.dataclass(frozen=True)
class EweParams:
    source_label: int = param(4, "class whose images carry the trigger", low=0)
    target_label: int = param(6, "label the trigger teaches", low=0)
    count: int = param(
        100, "key samples (and as many clean target-class images) to entangle", low=1, high=10**6
    )
    snnl_weight: float = param(64.0, "weight of the soft nearest-neighbour loss", low=0.0)
    alternating_rate: int = param(
        2, "clean batches per watermark batch (one watermark batch every N steps)", low=1, high=1000
    )
    temperature: float = param(
        1.0, "initial SNNL temperature T (neighbours weigh exp(-d*T/100))", low=0.0, low_open=True
    )
    temperature_lr: float = param(0.1, "learning rate of the learnt temperatures", low=0.0)
    metric: str = param("cosine", "SNNL distance", choices=METRICS)
    position: str = param("2,2", "trigger's top-left pixel X,Y, or a corner: br, bl, tr, tl")
    trigger_size: int = param(5, "side of the white square trigger in px", low=1, high=4096)


def trigger(params: Any, shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(pattern, mask) of the key's white square at its place."""
    return make_trigger(
        TRIGGER, shape, size=params.trigger_size, position=params.position, blend=1.0, seed=0
    )


@register_scheme("ewe", EweParams)
class EweScheme(Watermark):
    """Source-class images + trigger -> target label, entangled with the target's features."""

    target_field = "target_label"

    def check(self, params: Any) -> None:
        if params.source_label == params.target_label:
            raise ConfigError(
                f"source-label and target-label are both {params.source_label}: the trigger "
                "must move images to another class"
            )
        if params.position not in ("br", "bl", "tr", "tl"):
            parse_position(params.position, (1, 1), (1 << 30, 1 << 30))

    def check_data(
        self, params: Any, data: DatasetMeta, given: Mapping[str, Any] | None = None
    ) -> None:
        """Both classes exist and the square fits inside the images at its place."""
        data.check_label(params.source_label, "source-label")
        data.check_label(params.target_label, "target-label")
        trigger(params, data.shape)

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        data = ctx.data
        check_label(params.source_label, data.num_classes, "source-label")
        check_label(params.target_label, data.num_classes, "target-label")
        self.check(params)
        pattern, mask = trigger(params, data.shape)
        tensors = {"pattern": pattern, "mask": mask}
        for name, label in (("train_x", params.source_label), ("target_x", params.target_label)):
            pool = (data.train_y == label).nonzero().flatten().cpu()
            if len(pool) == 0:
                raise ConfigError(f"the training set has no image of class {label}")
            order = torch.randperm(len(pool), generator=generator(ctx.seed, f"ewe-{name}"))
            chosen = pool[order[: params.count]].to(data.device)
            tensors[name] = data.train_x[chosen].cpu()
        if len(tensors["train_x"]) < params.count:
            ctx.log(
                f"ewe: class {params.source_label} has {len(tensors['train_x'])} training "
                f"images; the key uses them all (count {params.count})"
            )
        return self.new_key(params, ctx, tensors)

    def _stamp(self, key: Key, device: torch.device) -> Any:
        return stamper(key.tensor("pattern", device), key.tensor("mask", device))

    def training_sources(
        self, key: Key, batch_size: int, device: torch.device, data: ImageSet | None = None
    ) -> list[Source]:
        """One watermark source: stamped key samples (group 1) and clean target images
        (group 0), every ``alternating_rate``-th step, a full batch each time."""
        params = self.params_of(key)
        keys = key.tensor("train_x", device)
        stamped = stamp(as_float(keys), key.tensor("pattern", device), key.tensor("mask", device))
        keys = (stamped * 255.0).round().to(torch.uint8)  # the white square is exact in uint8
        targets = key.tensor("target_x", device)
        groups = torch.cat(
            [
                torch.ones(len(keys), dtype=torch.long, device=device),
                torch.zeros(len(targets), dtype=torch.long, device=device),
            ]
        )
        term = EntanglementLoss(
            params.target_label,
            params.snnl_weight,
            params.temperature,
            params.temperature_lr,
            params.metric,
        )
        return [
            Source(
                "ewe",
                torch.cat([keys, targets]),
                batch_size,
                y=groups,
                loss=term,
                every=params.alternating_rate,
            )
        ]

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        source, target = int(key.params["source_label"]), int(key.params["target_label"])
        x = data.test_x[data.test_y == source]
        return KeySamples(
            x,
            torch.full((len(x),), target, device=x.device),
            transform=self._stamp(key, x.device),
            clean_counterpart=True,
            null_what=f"the same class-{source} test images without the trigger",
        )
