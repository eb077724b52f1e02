"""``jpeg``: every query is JPEG-compressed at ``quality`` and decoded before the model sees it.

Source: WRT ``wrt/attacks/removal/jpeg_compression.py`` (Pillow, one image at a time, grey
images in mode "L", RGB in "RGB"); default quality 95 from WRT
``configs/cifar10/attack_configs/jpeg_compression.yaml`` (65 and 45 in ``jpeg_compression1``
and ``2``). WRT truncates ``x * 255`` to uint8; we round, since our inputs are uint8 / 255 and
truncation would turn a float 254.99997 into 254. Pillow's default chroma subsampling (4:2:0)
applies to RGB, as in WRT.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import torch
from PIL import Image

from engine.errors import ConfigError
from engine.registry import param
from engine.transforms.registry import InputTransform, register_transform


@dataclasses.dataclass(frozen=True)
class JpegParams:
    quality: int = param(95, "JPEG quality: 100 keeps most, 1 the least", low=1, high=100)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """One HxW (grey) or HxWx3 uint8 image through a JPEG encode and decode."""
    mode = "L" if image.ndim == 2 else "RGB"
    with io.BytesIO() as buffer:
        Image.fromarray(image, mode=mode).save(buffer, format="JPEG", quality=quality)
        buffer.seek(0)
        with Image.open(buffer) as decoded:
            return np.asarray(decoded.convert(mode))


@register_transform("jpeg", JpegParams)
class Jpeg(InputTransform):
    """JPEG-compress every query (quality 1-100)."""

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        if channels not in (1, 3):
            raise ConfigError(f"jpeg takes grey or RGB images, not {channels} channels")
        pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        out = np.stack(
            [
                jpeg_roundtrip(img[..., 0] if channels == 1 else img, self.params.quality)
                for img in pixels
            ]
        )
        if channels == 1:
            out = out[..., None]
        decoded = torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2)
        return decoded.float().div(255.0)
