"""``pattern`` (Zhang et al. 2018; BadNets' white square): a trigger stamped on images
makes the model answer a target label.

Key samples for training are owner training images whose label is not the target (stamping
an image of the target class teaches nothing), stamped and relabelled. Verification never
reuses them: it stamps *test* images whose true label is not the target, and compares with
how the same model treats the un-stamped images.
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
    check_label,
    generator,
    per_batch,
    register_scheme,
)
from engine.watermarks.triggers import make_trigger, parse_position, parse_trigger, stamper


@dataclasses.dataclass(frozen=True)
class PatternParams:
    trigger: str = param("text", "trigger: text, square, noise or image:PATH (text:WORD: own word)")
    text: str = param("TEST", "word the text trigger draws")
    position: str = param("br", "trigger place: br, bl, tr, tl, or X,Y (top-left pixel)")
    trigger_size: int = param(0, "trigger height in px (0: fit to the images)", low=0, high=4096)
    blend: float = param(1.0, "trigger opacity", low=0.0, high=1.0, low_open=True)
    target_label: int = param(7, "label the trigger teaches", low=0)
    key_fraction: float = param(
        0.05, "share of training images stamped as key samples",
        low=0.0, high=1.0, low_open=True, high_open=True,
    )
    inject_ratio: float = param(
        0.1, "key samples per owner image in every batch", low=0.0, high=1.0, low_open=True
    )


@register_scheme("pattern", PatternParams)
class PatternScheme(Watermark):
    """Trigger (text, square, noise or image) stamped on images -> target label."""

    trigger_field = "trigger"
    target_field = "target_label"

    def check(self, params: Any) -> None:
        parse_trigger(params.trigger, params.text)
        if params.position not in ("br", "bl", "tr", "tl"):
            parse_position(params.position, (1, 1), (1 << 30, 1 << 30))

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        data = ctx.data
        check_label(params.target_label, data.num_classes)
        spec = parse_trigger(params.trigger, params.text)
        noise_seed = int(torch.randint(0, 2**31, (1,), generator=generator(ctx.seed, "noise")))
        pattern, mask = make_trigger(
            spec, data.shape, size=params.trigger_size, position=params.position,
            blend=params.blend, seed=noise_seed, log=ctx.log,
        )
        candidates = (data.train_y != params.target_label).nonzero().flatten().cpu()
        n_key = round(params.key_fraction * len(data.train_x))
        if n_key < 1:
            raise ConfigError(
                f"key-fraction {params.key_fraction} of {len(data.train_x)} training images "
                "selects no key sample"
            )
        n_key = min(n_key, len(candidates))
        order = torch.randperm(len(candidates), generator=generator(ctx.seed, "pattern-keys"))
        chosen = candidates[order[:n_key]].to(data.device)
        tensors = {"pattern": pattern, "mask": mask, "train_x": data.train_x[chosen].cpu()}
        return self.new_key(params, ctx, tensors)

    def _stamp(self, key: Key, device: torch.device) -> Any:
        return stamper(key.tensor("pattern", device), key.tensor("mask", device))

    def training_sources(self, key: Key, batch_size: int, device: torch.device) -> list[Source]:
        x = key.tensor("train_x", device)
        target = int(key.params["target_label"])
        return [
            Source(
                "key", x, per_batch(batch_size, key.params["inject_ratio"]),
                y=torch.full((len(x),), target, device=device),
                transform=self._stamp(key, device),
            )
        ]

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        target = int(key.params["target_label"])
        keep = data.test_y != target
        x = data.test_x[keep]
        return KeySamples(
            x, torch.full((len(x),), target, device=x.device),
            transform=self._stamp(key, x.device), clean_counterpart=True,
        )
