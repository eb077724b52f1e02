"""A small image drawn with half blocks: two pixels per cell, true colour.

Terminal images need no graphics protocol this way, so they work over any SSH session and
in the browser mode alike.
"""

from __future__ import annotations

import torch
from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget


def fit(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Nearest-neighbour resample of a uint8 [C,H,W] image to [3, height, width] RGB."""
    if image.shape[0] == 1:
        image = image.expand(3, -1, -1)
    _, h, w = image.shape
    rows = (torch.arange(height) * h // max(height, 1)).clamp(max=h - 1)
    cols = (torch.arange(width) * w // max(width, 1)).clamp(max=w - 1)
    return image[:3][:, rows][:, :, cols]


class ImageView(Widget):
    """Shows one uint8 image scaled to the widget, keeping its aspect ratio."""

    DEFAULT_CSS = """
    ImageView { width: 1fr; height: 1fr; min-width: 8; min-height: 4; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.image: torch.Tensor | None = None
        self._pixels: torch.Tensor | None = None

    def show(self, image: torch.Tensor | None) -> None:
        self.image = image
        self._pixels = None
        self.refresh()

    def _fitted(self) -> torch.Tensor | None:
        if self.image is None or self.size.width == 0 or self.size.height == 0:
            return None
        _, h, w = self.image.shape
        cells_w, pixels_h = self.size.width, self.size.height * 2
        scale = min(cells_w / w, pixels_h / h)
        width, height = max(1, int(w * scale)), max(2, int(h * scale) // 2 * 2)
        if self._pixels is None or self._pixels.shape[1:] != (height, width):
            self._pixels = fit(self.image, width, height)
        return self._pixels

    def render_line(self, y: int) -> Strip:
        pixels = self._fitted()
        if pixels is None or 2 * y + 1 >= pixels.shape[1]:
            return Strip.blank(self.size.width)
        top, bottom = pixels[:, 2 * y].tolist(), pixels[:, 2 * y + 1].tolist()
        segments = [
            Segment(
                "▀",
                Style(
                    color=f"rgb({top[0][i]},{top[1][i]},{top[2][i]})",
                    bgcolor=f"rgb({bottom[0][i]},{bottom[1][i]},{bottom[2][i]})",
                ),
            )
            for i in range(pixels.shape[2])
        ]
        pad = self.size.width - pixels.shape[2]
        if pad > 0:  # centre the image
            segments = [Segment(" " * (pad // 2)), *segments, Segment(" " * (pad - pad // 2))]
        return Strip(segments, self.size.width)
