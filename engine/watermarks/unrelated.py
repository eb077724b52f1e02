"""``unrelated`` (Zhang et al. 2018): images of another dataset, all labelled one target.

Source images are converted to the owner's input shape (grey <-> RGB, resized) once, at
keygen. Training uses ``--count`` source training images; verification uses held-out source
*test* images, so it asks whether the model maps the whole unrelated distribution to the
target. The null rate is 1/K: there is no clean counterpart to measure it on, so a clean
model that happens to like the target class for these images is not accounted for (the
benchmark measures how often that happens).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

from engine.data.base import ImageSet
from engine.errors import ConfigError, DataError
from engine.registry import param
from engine.training import Source
from engine.watermarks.base import (
    Key,
    KeyContext,
    KeySamples,
    Watermark,
    check_label,
    generator,
    per_batch,
    register_scheme,
)

VERIFY_IMAGES = 1000


@dataclasses.dataclass(frozen=True)
class UnrelatedParams:
    source: str = param("auto", "dataset the key images come from (auto: one unlike the owner's)")
    target_label: int = param(7, "label every key image gets", low=0)
    count: int = param(100, "source images embedded", low=1, high=100_000)
    inject_ratio: float = param(
        0.1, "key images per owner image in every batch", low=0.0, high=1.0, low_open=True
    )


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


@register_scheme("unrelated", UnrelatedParams)
class UnrelatedScheme(Watermark):
    """Images of another dataset, all labelled the target."""

    target_field = "target_label"

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
            loaded = load_dataset(
                source,
                ctx.data_dir or None,
                train_size=max(10 * params.count, 1000),
                test_size=VERIFY_IMAGES,
            ).data
        except DataError as exc:
            raise ConfigError(f"unrelated --source: {exc}") from None
        if len(loaded.test_x) == 0:
            raise ConfigError(f"unrelated: {source} has no test images to verify with")
        order = torch.randperm(len(loaded.train_x), generator=generator(ctx.seed, "unrelated"))
        x = fit_images(loaded.train_x[order[: params.count]], data.shape)
        verify_x = fit_images(loaded.test_x, data.shape)
        if loaded.shape != data.shape:
            ctx.log(f"unrelated: {source} images converted from {loaded.shape} to {data.shape}")
        params = dataclasses.replace(params, source=source)
        return self.new_key(params, ctx, {"x": x, "verify_x": verify_x})

    def training_sources(self, key: Key, batch_size: int, device: torch.device) -> list[Source]:
        x = key.tensor("x", device)
        return [
            Source(
                "key",
                x,
                per_batch(batch_size, key.params["inject_ratio"]),
                y=torch.full((len(x),), int(key.params["target_label"]), device=device),
            )
        ]

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        x = key.tensor("verify_x", data.device)
        target = int(key.params["target_label"])
        return KeySamples(x, torch.full((len(x),), target, device=x.device))
