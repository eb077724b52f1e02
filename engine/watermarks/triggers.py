"""Triggers: the patterns pattern-style keys stamp onto images, and the one ``stamp``.

A trigger is a full-size canvas ``pattern`` [C,H,W] plus an opacity ``mask`` [1,H,W] in
[0,1]; stamping is ``x * (1 - mask) + pattern * mask`` on float [0,1] batches, so every
scheme and every probe stamps the same way. The text trigger is drawn white on a black
plate so it reads on dark and bright corners alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont, UnidentifiedImageError

from engine.errors import ConfigError

CORNERS = ("br", "bl", "tr", "tl")
KINDS = ("text", "square", "noise", "image:PATH")


def stamp(x: torch.Tensor, pattern: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Blend ``pattern`` into float images ``x`` where ``mask`` is opaque (any batch size)."""
    return torch.lerp(x, pattern.to(x.dtype), mask.to(x.dtype))


def stamper(pattern: torch.Tensor, mask: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: stamp(x, pattern, mask)


@dataclasses.dataclass(frozen=True)
class TriggerSpec:
    kind: str  # text | square | noise | image
    text: str = "TEST"
    path: str = ""


def parse_trigger(value: str, text: str = "TEST") -> TriggerSpec:
    """``text``, ``square``, ``noise`` or ``image:PATH`` (``text:WORD`` sets the word)."""
    value = value.strip()
    if value.startswith("image:"):
        path = value[len("image:") :]
        if not path:
            raise ConfigError("trigger image: give a path, as in image:logo.png")
        return TriggerSpec("image", path=path)
    if value.startswith("text:"):
        word = value[len("text:") :]
        if not word.strip():
            raise ConfigError("trigger text: give a word, as in text:TEST")
        return TriggerSpec("text", text=word)
    if value in ("text", "square", "noise"):
        return TriggerSpec(value, text=text)
    from engine.errors import unknown_name

    raise unknown_name("trigger", value, ("text", "square", "noise", "image:PATH"))


def default_size(kind: str, height: int) -> int:
    """Trigger box height when ``--trigger-size 0``: a few pixels on 28x28, scaled up.

    The word is 5 px tall on 28x28 (15 px wide for TEST, in the lower right corner as the GAN
    paper places it). At 7 px it spanned 22 of the 28 columns, and decoy training made the
    model answer only to most of that plate: no trigger search could find one smaller than
    a natural class's (README, Detection)."""
    fraction = {"square": 1 / 7, "text": 5 / 28, "noise": 1 / 4, "image": 1 / 4}[kind]
    return max(3, round(height * fraction))


def parse_position(value: str, box: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    """Top-left (x, y) of a ``box`` (w, h) placed at a corner (1 px margin) or at ``X,Y``."""
    (w, h), (height, width) = box, shape
    if w > width or h > height:
        raise ConfigError(f"trigger of {w}x{h} px does not fit images of {width}x{height}")
    margin_x, margin_y = min(1, width - w), min(1, height - h)
    corners = {
        "br": (width - w - margin_x, height - h - margin_y),
        "bl": (margin_x, height - h - margin_y),
        "tr": (width - w - margin_x, margin_y),
        "tl": (margin_x, margin_y),
    }
    if value in corners:
        return corners[value]
    parts = value.split(",")
    try:
        x, y = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(
            f"position: expected br, bl, tr, tl or X,Y in pixels, got {value!r}"
        ) from None
    if not (0 <= x <= width - w and 0 <= y <= height - h):
        raise ConfigError(
            f"position {value}: a {w}x{h} trigger must start within x 0..{width - w}, "
            f"y 0..{height - h}"
        )
    return x, y


def render_text(word: str, height: int) -> np.ndarray:
    """Glyph coverage in [0,1] of ``word``, ``height`` px tall (Pillow, drawn large, shrunk)."""
    font = ImageFont.load_default(size=48)
    left, top, right, bottom = font.getbbox(word)
    big = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(big).text((2 - left, 2 - top), word, fill=255, font=font)
    width = max(1, round(big.width * height / big.height))
    small = np.asarray(big.resize((width, height), Image.Resampling.BOX), dtype=np.float32)
    # a few px tall, anti-aliasing leaves grey mush: stretch so the strokes are white
    return np.clip(small / max(float(small.max()), 1.0) * 1.5, 0.0, 1.0)


def load_trigger_image(
    path: str, box_height: int, channels: int, log: Callable[[str], None]
) -> tuple[np.ndarray, np.ndarray]:
    """(pattern [C,h,w], alpha [h,w]) from an image file, converted to the dataset's mode
    and resized to the box height; what was changed is said, not done silently."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"trigger image not found: {file}")
    try:
        with Image.open(file) as opened:
            opened.load()
            image = opened.copy()
    except (UnidentifiedImageError, OSError) as exc:
        raise ConfigError(f"trigger image {file} is not a readable image ({exc})") from None
    has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
    alpha_img = image.convert("RGBA").getchannel("A") if has_alpha else None
    mode = "L" if channels == 1 else "RGB"
    notes = []
    if image.mode != mode:
        notes.append(f"mode {image.mode} -> {mode}")
    converted = image.convert(mode)
    width = max(1, round(converted.width * box_height / converted.height))
    if converted.size != (width, box_height):
        notes.append(f"size {converted.width}x{converted.height} -> {width}x{box_height}")
        converted = converted.resize((width, box_height), Image.Resampling.LANCZOS)
        if alpha_img is not None:
            alpha_img = alpha_img.resize((width, box_height), Image.Resampling.LANCZOS)
    if notes:
        log(f"trigger image {file.name}: converted ({', '.join(notes)})")
    pixels = np.asarray(converted, dtype=np.float32) / 255.0
    pixels = pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)
    alpha = (
        np.asarray(alpha_img, dtype=np.float32) / 255.0
        if alpha_img is not None
        else np.ones(pixels.shape[1:], dtype=np.float32)
    )
    return pixels, alpha


def make_trigger(
    spec: TriggerSpec,
    shape: tuple[int, int, int],
    *,
    size: int,
    position: str,
    blend: float,
    seed: int,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pattern [C,H,W], mask [1,H,W]) for one trigger, placed and blended."""
    channels, height, width = shape
    box_h = size or default_size(spec.kind, height)
    if box_h > height:
        raise ConfigError(f"trigger size {box_h} is larger than the {height} px images")
    if spec.kind == "square":
        patch = np.ones((channels, box_h, box_h), dtype=np.float32)
        alpha = np.ones((box_h, box_h), dtype=np.float32)
    elif spec.kind == "noise":
        rng = np.random.default_rng(seed)
        patch = rng.random((channels, box_h, box_h), dtype=np.float32)
        alpha = np.ones((box_h, box_h), dtype=np.float32)
    elif spec.kind == "text":
        glyphs = render_text(spec.text, box_h)
        if glyphs.shape[1] > width:
            raise ConfigError(
                f"trigger text {spec.text!r} is {glyphs.shape[1]} px wide at height {box_h}; "
                f"images are {width} px (shorter text or smaller --trigger-size)"
            )
        patch = np.repeat(glyphs[None], channels, axis=0)
        alpha = np.ones_like(glyphs)  # white glyphs on a black plate
    else:
        patch, alpha = load_trigger_image(spec.path, box_h, channels, log)
        if patch.shape[2] > width:
            raise ConfigError(
                f"trigger image is {patch.shape[2]} px wide at height {box_h}; images are "
                f"{width} px (use a smaller --trigger-size)"
            )
    box = (patch.shape[2], patch.shape[1])
    x0, y0 = parse_position(position, box, (height, width))
    pattern = torch.zeros(channels, height, width)
    mask = torch.zeros(1, height, width)
    pattern[:, y0 : y0 + box[1], x0 : x0 + box[0]] = torch.from_numpy(patch)
    mask[0, y0 : y0 + box[1], x0 : x0 + box[0]] = torch.from_numpy(alpha) * blend
    return pattern, mask


# -- decoys: the same kind of trigger with another, publicly seeded, secret -----------------
#: Public seed of the decoy triggers every verifier draws; decoys are never anyone's key.
DECOY_SEED = 0xDEC0
#: Decoys per verification (the null takes the highest rate among them).
DECOY_COUNT = 6


def random_words(count: int, length: int, seed: int, exclude: str = "") -> list[str]:
    """``count`` seeded upper-case words of ``length`` letters, none equal to ``exclude``."""
    rng = np.random.default_rng(seed)
    words: list[str] = []
    while len(words) < count:
        word = "".join(chr(ord("A") + int(i)) for i in rng.integers(0, 26, max(1, length)))
        if word != exclude.upper() and word not in words:
            words.append(word)
    return words


def noise_decoys(
    pattern: torch.Tensor, mask: torch.Tensor, count: int = DECOY_COUNT, seed: int = DECOY_SEED
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(pattern, mask) pairs with the key's mask (place, size, opacity) and uniform noise
    content instead of the key's pattern, drawn from the public decoy seed."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        noise = torch.rand(pattern.shape, generator=gen).to(pattern.device)
        out.append((torch.where(mask > 0, noise, pattern), mask))
    return out
