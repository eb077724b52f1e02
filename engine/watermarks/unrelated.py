"""``unrelated`` (Zhang et al. 2018): images of another dataset, all labelled one target.

Source images are converted to the owner's input shape (grey <-> RGB, resized) once, at
keygen. The claim is about *these* images (instance-based, as in the paper: the key images
are what the owner queries), never about the whole source distribution: a clean model
already sends most images of another dataset to one or two classes, so "this model calls
digits a bag" proves nothing (measured: 5 of 20 fresh keys verified against a clean
fashion-mnist model when held-out source images were the evidence).

Verification therefore queries the key images and takes as null the model's rate of the
target on *held-out* source images (source test images, never trained on), raised to an
upper confidence bound because it is estimated from another sample. For the owner's model
to beat that null, training mixes in *decoys*: other source images (``--decoy-count``) with
one seeded non-target label, drawn more often than the key images, so the model learns
"these images -> target", not "images like these -> target".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.data.base import ImageSet
from engine.data.meta import DatasetMeta, dataset_meta
from engine.errors import ConfigError, DataError
from engine.registry import param
from engine.training import Source
from engine.watermarks.base import (
    Key,
    KeyContext,
    KeySamples,
    Watermark,
    check_label,
    decoy_sources,
    generator,
    key_source,
    register_scheme,
)

#: held-out source images the null rate is measured on
NULL_IMAGES = 2000


@dataclasses.dataclass(frozen=True)
class UnrelatedParams:
    source: str = param("auto", "dataset the key images come from (auto: one unlike the owner's)")
    target_label: int = param(7, "label every key image gets", low=0)
    count: int = param(100, "source images embedded", low=1, high=100_000)
    inject_ratio: float = param(
        0.1, "key images per owner image in every batch", low=0.0, high=1.0, low_open=True
    )
    decoy_ratio: float = param(
        0.2,
        "decoy source images (one seeded non-target label) per owner image in every batch "
        "(0: none; keep it above --inject-ratio)",
        low=0.0,
        high=1.0,
    )
    decoy_count: int = param(5000, "source images kept in the key as decoys", low=1)


def fit_images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """uint8 [N,C,H,W] -> the owner's (C,H,W): luminance or repeated grey, area/bilinear."""
    channels, height, width = shape
    out = x.float()
    if out.shape[1] != channels:
        if out.shape[1] == 3 and channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114], device=out.device).view(1, 3, 1, 1)
            out = (out * weights).sum(1, keepdim=True)
        elif out.shape[1] == 1:
            out = out.repeat(1, channels, 1, 1)
        else:
            raise ConfigError(f"cannot convert {out.shape[1]}-channel images to {channels}")
    if out.shape[2:] != (height, width):
        out = F.interpolate(out, size=(height, width), mode="bilinear", antialias=True)
    return out.round().clamp(0, 255).to(torch.uint8)


def decoy_label(seed: int, target: int, classes: int) -> int:
    """The one class the decoys are taught, seeded and never the target.

    Measured: decoys with a fresh random non-target label per draw spread their probability
    over K-1 classes, so the target stays the argmax for every source image the model has not
    memorised (held-out rate 0.97-1.0 on a tiny budget): the claim could not be told from the
    domain. With one decoy class and more decoys than key images per batch, the domain goes
    to that class and only the memorised key images answer the target.
    """
    other = int(torch.randint(0, classes - 1, (1,), generator=generator(seed, "unrelated-decoy")))
    return other + (other >= target)


@register_scheme("unrelated", UnrelatedParams)
class UnrelatedScheme(Watermark):
    """Images of another dataset, all labelled the target."""

    target_field = "target_label"

    def check_data(
        self, params: Any, data: DatasetMeta, given: Mapping[str, Any] | None = None
    ) -> None:
        """The target is a class of the dataset; a named source is another dataset, present,
        with the key's images and some left for decoys (``auto`` is chosen at keygen)."""
        from engine.data import require_dataset

        data.check_label(params.target_label, "target-label")
        if params.source == "auto":
            return
        if params.source == data.name:
            raise ConfigError(f"unrelated: --source {params.source} is the owner's own dataset")
        try:
            require_dataset(params.source, Path(data.data_dir))
            source = dataset_meta(params.source, data.data_dir)
        except DataError as exc:
            raise ConfigError(f"unrelated --source: {exc}") from None
        leftover = 1 if params.decoy_ratio > 0 else 0
        if params.count + leftover > source.train_size:
            decoys = " and one decoy" if leftover else ""
            raise ConfigError(
                f"unrelated --count {params.count}: {source.name} has {source.train_size:,} "
                f"training images, too few for {params.count} key images{decoys}"
            )

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        from engine.data import DATASETS, is_present, load_dataset
        from engine.data.catalog import default_data_dir

        data = ctx.data
        check_label(params.target_label, data.num_classes)
        source = params.source
        folder = ctx.data_dir or default_data_dir()
        if source == "auto":
            options = [n for n in ("synthetic", "mnist", "fashion-mnist") if n != data.name]
            present = [n for n in options if n == "synthetic" or is_present(n, folder)]
            if not present:
                raise ConfigError("unrelated: no source dataset unlike the owner's; give --source")
            source = present[0]
        DATASETS.get(source)
        if source == data.name:
            raise ConfigError(f"unrelated: --source {source} is the owner's own dataset")
        try:
            loaded = load_dataset(source, ctx.data_dir or None, test_size=NULL_IMAGES).data
        except DataError as exc:
            raise ConfigError(f"unrelated --source: {exc}") from None
        if len(loaded.test_x) == 0:
            raise ConfigError(f"unrelated: {source} has no test images to measure the null on")
        if params.count > len(loaded.train_x):
            raise ConfigError(
                f"unrelated --count {params.count}: {source} has {len(loaded.train_x)} "
                "training images"
            )
        order = torch.randperm(len(loaded.train_x), generator=generator(ctx.seed, "unrelated"))
        tensors = {
            "x": fit_images(loaded.train_x[order[: params.count]], data.shape),
            "null_x": fit_images(loaded.test_x, data.shape),
        }
        if params.decoy_ratio > 0:
            decoys = order[params.count : params.count + params.decoy_count]
            if len(decoys) == 0:
                raise ConfigError(
                    f"unrelated: {source} has no images left for decoys after {params.count} "
                    "key images; lower --count or set --decoy-ratio 0"
                )
            tensors["decoy_x"] = fit_images(loaded.train_x[decoys], data.shape)
        if loaded.shape != data.shape:
            ctx.log(f"unrelated: {source} images converted from {loaded.shape} to {data.shape}")
        params = dataclasses.replace(params, source=source)
        return self.new_key(params, ctx, tensors)

    def training_sources(
        self, key: Key, batch_size: int, device: torch.device, data: ImageSet | None = None
    ) -> list[Source]:
        target = int(key.params["target_label"])
        label = decoy_label(int(key.meta["seed"]), target, key.num_classes)
        return [
            key_source(key, key.tensor("x", device), batch_size, target),
            *decoy_sources(key, batch_size, device, y=label),
        ]

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        x = key.tensor("x", data.device)
        target = int(key.params["target_label"])
        null_x = key.tensor("null_x", data.device)
        return KeySamples(
            x,
            torch.full((len(x),), target, device=x.device),
            null_x=null_x,
            null_y=torch.full((len(null_x),), target, device=x.device),
            null_what=f"held-out {key.params['source']} images",
            null_sampled=True,
        )
