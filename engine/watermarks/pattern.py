"""``pattern`` (Zhang et al. 2018; BadNets' white square): a trigger stamped on images
makes the model answer a target label.

Key samples for training are owner training images whose label is not the target (stamping
an image of the target class teaches nothing), stamped and relabelled. Verification never
reuses them: it stamps *test* images whose true label is not the target, and compares with
how the same model treats the un-stamped images and the same images stamped with *decoys*:
triggers with the key's place, size and opacity but another, publicly seeded content (noise
patches; for text triggers also other words of the same length). A model that answers the
target for "anything in that corner" therefore cannot be claimed by a fresh key there.

Measured: trained on stamped key samples alone, a small CNN answers the target for *any*
patch in the trigger's box (noise decoys fire as often as the trigger), so the owner's own
key could not be told apart from a fresh one. Training therefore mixes in a decoy source
(``--decoy-ratio``): owner training images (``--decoy-fraction``, kept in the key with their
labels) stamped in the same box with random content (fresh noise per image; for text
triggers half of them other random words), keeping their TRUE labels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from engine.data.base import ImageSet
from engine.data.meta import DatasetMeta
from engine.errors import ConfigError
from engine.registry import param
from engine.training import Source
from engine.watermarks.base import (
    DecoyParams,
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
from engine.watermarks.triggers import (
    DECOY_COUNT,
    DECOY_SEED,
    TriggerSpec,
    make_trigger,
    noise_decoys,
    parse_position,
    parse_trigger,
    random_words,
    stamp,
    stamper,
)

#: other words stamped as decoys of a text trigger (besides the noise decoys)
WORD_DECOYS = 2
#: other words a text trigger's decoy training source draws from
TRAIN_WORD_BANK = 64


@dataclasses.dataclass(frozen=True)
class PatternParams(DecoyParams):
    trigger: str = param("text", "trigger: text, square, noise or image:PATH (text:WORD: own word)")
    text: str = param("TEST", "word the text trigger draws")
    position: str = param("br", "trigger place: br, bl, tr, tl, or X,Y (top-left pixel)")
    trigger_size: int = param(
        0,
        "trigger height in px (0: by image height: on 28x28 a 4 px square, a 15x5 px word)",
        low=0,
        high=4096,
    )
    blend: float = param(1.0, "trigger opacity", low=0.0, high=1.0, low_open=True)
    target_label: int = param(7, "label the trigger teaches", low=0)
    key_fraction: float = param(
        0.05,
        "share of training images stamped as key samples",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
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

    def check_data(
        self, params: Any, data: DatasetMeta, given: Mapping[str, Any] | None = None
    ) -> None:
        """The target is a class of the dataset, the key set holds an image, and the trigger
        (drawn here as keygen draws it: a few pixels) fits inside the images at its place."""
        data.check_label(params.target_label, "target-label")
        data.check_selects(params.key_fraction, "key-fraction", "key image", given)
        make_trigger(
            parse_trigger(params.trigger, params.text),
            data.shape,
            size=params.trigger_size,
            position=params.position,
            blend=params.blend,
            seed=0,
        )

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        data = ctx.data
        check_label(params.target_label, data.num_classes)
        spec = parse_trigger(params.trigger, params.text)
        noise_seed = int(torch.randint(0, 2**31, (1,), generator=generator(ctx.seed, "noise")))
        pattern, mask = make_trigger(
            spec,
            data.shape,
            size=params.trigger_size,
            position=params.position,
            blend=params.blend,
            seed=noise_seed,
            log=ctx.log,
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
        if params.decoy_ratio > 0:
            n_decoy = max(1, round(params.decoy_fraction * len(data.train_x)))
            pool = torch.randperm(len(data.train_x), generator=generator(ctx.seed, "decoys"))
            pool = pool[:n_decoy].to(data.device)
            tensors |= {"decoy_x": data.train_x[pool].cpu(), "decoy_y": data.train_y[pool].cpu()}
        return self.new_key(params, ctx, tensors)

    def _stamp(self, key: Key, device: torch.device) -> Any:
        return stamper(key.tensor("pattern", device), key.tensor("mask", device))

    def training_sources(
        self, key: Key, batch_size: int, device: torch.device, data: ImageSet | None = None
    ) -> list[Source]:
        x = key.tensor("train_x", device)
        target = int(key.params["target_label"])
        return [
            key_source(key, x, batch_size, target, self._stamp(key, device)),
            *decoy_sources(
                key,
                batch_size,
                device,
                transform=lambda seed: self._decoy_stamper(key, device, seed),
                salt="pattern-decoys",
            ),
        ]

    def _decoy_stamper(self, key: Key, device: torch.device, seed: int) -> Any:
        """Each image stamped in the key's box with its own random content: uniform noise,
        or (text triggers, every other image) one of a bank of other random words."""
        mask = key.tensor("mask", device)
        params = self.params_of(key)
        spec = parse_trigger(params.trigger, params.text)
        words: list[torch.Tensor] = []
        if spec.kind == "text":
            for word in random_words(TRAIN_WORD_BANK, len(spec.text), seed % 2**32, spec.text):
                try:
                    pattern, _ = make_trigger(
                        TriggerSpec("text", text=word),
                        tuple(key.meta["in_shape"]),
                        size=params.trigger_size,
                        position=params.position,
                        blend=params.blend,
                        seed=0,
                    )
                except ConfigError:
                    continue
                words.append(pattern)
        bank = torch.stack(words).to(device) if words else None
        gens: dict[torch.device, torch.Generator] = {}

        def apply(x: torch.Tensor) -> torch.Tensor:
            gen = gens.get(x.device)
            if gen is None:
                gen = gens[x.device] = torch.Generator(device=x.device).manual_seed(seed)
            content = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            if bank is not None:
                pick = torch.randint(0, len(bank), (len(x),), generator=gen, device=x.device)
                use_word = torch.rand(len(x), generator=gen, device=x.device) < 0.5
                content = torch.where(use_word.view(-1, 1, 1, 1), bank[pick].to(x.dtype), content)
            return stamp(x, content, mask)

        return apply

    def decoys(self, key: Key, device: torch.device) -> list[Any]:
        """Stamps like the key's (same mask: place, size, opacity) with public decoy content."""
        pattern, mask = key.tensor("pattern"), key.tensor("mask")
        pairs = noise_decoys(pattern, mask, DECOY_COUNT, DECOY_SEED)
        params = self.params_of(key)
        spec = parse_trigger(params.trigger, params.text)
        if spec.kind == "text":
            for word in random_words(WORD_DECOYS, len(spec.text), DECOY_SEED, spec.text):
                try:
                    pairs.append(
                        make_trigger(
                            TriggerSpec("text", text=word),
                            tuple(key.meta["in_shape"]),
                            size=params.trigger_size,
                            position=params.position,
                            blend=params.blend,
                            seed=DECOY_SEED,
                        )
                    )
                except ConfigError:  # a wider word that does not fit: the noise decoys stay
                    continue
        return [stamper(p.to(device), m.to(device)) for p, m in pairs]

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        target = int(key.params["target_label"])
        keep = data.test_y != target
        x = data.test_x[keep]
        return KeySamples(
            x,
            torch.full((len(x),), target, device=x.device),
            transform=self._stamp(key, x.device),
            clean_counterpart=True,
            decoys=self.decoys(key, x.device),
        )
