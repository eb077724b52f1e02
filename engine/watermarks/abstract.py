"""``abstract`` (Adi et al. 2018): a set of abstract images, each with a random label.

The images are generated procedurally (seeded: smooth colour fields and random shapes drawn
with Pillow), or read from ``--images DIR``. Because every label is drawn uniformly and
independently of everything a model could know, a model not trained with the key matches
each one with probability exactly 1/K: the null of the binomial test is not a guess here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, UnidentifiedImageError

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
    key_source,
    register_scheme,
)


@dataclasses.dataclass(frozen=True)
class AbstractParams:
    count: int = param(100, "abstract images to generate", low=1, high=100_000)
    images: str = param("", "folder of image files to use instead of generated ones")
    inject_ratio: float = param(
        0.1, "key images per owner image in every batch", low=0.0, high=1.0, low_open=True
    )


def render_abstract(count: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """``count`` seeded abstract images, uint8 [N,C,H,W]: a smooth colour field plus shapes."""
    channels, height, width = shape
    gen = generator(seed, "abstract-images")
    rng = np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=gen)))
    scale = 4
    out = []
    for _ in range(count):
        grid = rng.random((3, 3, 3)) * 255
        field = Image.fromarray(grid.astype(np.uint8), "RGB").resize(
            (width * scale, height * scale), Image.Resampling.BICUBIC
        )
        draw = ImageDraw.Draw(field)
        for _ in range(int(rng.integers(2, 7))):
            x0, x1 = sorted(rng.integers(0, width * scale, 2).tolist())
            y0, y1 = sorted(rng.integers(0, height * scale, 2).tolist())
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            kind = int(rng.integers(0, 3))
            if kind == 0:
                draw.ellipse((x0, y0, x1 + 2, y1 + 2), fill=colour)
            elif kind == 1:
                draw.rectangle((x0, y0, x1 + 2, y1 + 2), fill=colour)
            else:
                draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(2, 3 * scale)))
        small = field.resize((width, height), Image.Resampling.LANCZOS)
        out.append(_to_array(small, channels))
    return torch.from_numpy(np.stack(out))


def _to_array(image: Image.Image, channels: int) -> np.ndarray:
    if channels == 1:
        return np.asarray(image.convert("L"))[None]
    return np.asarray(image.convert("RGB")).transpose(2, 0, 1).copy()


def read_image_folder(folder: str, shape: tuple[int, int, int], log: Any) -> torch.Tensor:
    """Every file in ``folder`` as an image of the dataset's shape; non-images are refused."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"--images: folder not found: {path}")
    files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        raise ConfigError(f"--images: no files in {path}")
    channels, height, width = shape
    out, resized = [], 0
    for file in files:
        try:
            with Image.open(file) as opened:
                opened.load()
                image = opened.copy()
        except (UnidentifiedImageError, OSError) as exc:
            raise ConfigError(f"--images: {file} is not a readable image ({exc})") from None
        if image.size != (width, height):
            resized += 1
            image = image.resize((width, height), Image.Resampling.LANCZOS)
        out.append(_to_array(image, channels))
    if resized:
        log(
            f"--images: resized {resized} of {len(files)} images to {width}x{height}, "
            f"{'grey' if channels == 1 else 'RGB'}"
        )
    return torch.from_numpy(np.stack(out))


@register_scheme("abstract", AbstractParams)
class AbstractScheme(Watermark):
    """Abstract images (generated, or a folder), each with a random label."""

    def keygen(self, params: Any, ctx: KeyContext) -> Key:
        shape = ctx.data.shape
        if params.images:
            x = read_image_folder(params.images, shape, ctx.log)
        else:
            x = render_abstract(params.count, shape, ctx.seed)
        k = ctx.data.num_classes
        y = torch.randint(0, k, (len(x),), generator=generator(ctx.seed, "abstract-labels"))
        return self.new_key(params, ctx, {"x": x, "y": y})

    def training_sources(
        self, key: Key, batch_size: int, device: torch.device, data: ImageSet | None = None
    ) -> list[Source]:
        return [key_source(key, key.tensor("x", device), batch_size, key.tensor("y", device))]

    def key_samples(self, key: Key, data: ImageSet) -> KeySamples:
        return KeySamples(key.tensor("x", data.device), key.tensor("y", data.device))
