"""``synthetic``: procedurally rendered handwritten-style digits, the offline default.

Rendered with Pillow from a fixed seed (train and test from different seeds), so every
machine gets the same dataset without any download; cached on disk after the first render.
The renderer (and Pillow) is imported only for that first render: every ``wmtui`` start
imports this module to register the name, and a cached load never draws a digit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine import progress
from engine.data.base import ImageSet
from engine.data.cache import cached
from engine.data.catalog import DATASETS, DIGITS, DatasetRequest

TRAIN_SEED, TEST_SEED = 20_240_601, 20_240_602
DEFAULT_TRAIN, DEFAULT_TEST = 60_000, 10_000
RENDER_VERSION = 1
#: what the first launch says while it draws (it takes seconds: 16 s for 70k on a busy CPU)
RENDERING = "rendering synthetic digits"


@DATASETS.register("synthetic")
def load_synthetic(request: DatasetRequest) -> ImageSet:
    """Rendered digits 0-9, 28x28 grey, 60k/10k; no files needed."""
    n_train = request.train_size or DEFAULT_TRAIN
    n_test = request.test_size or DEFAULT_TEST

    def build() -> dict[str, torch.Tensor]:
        from engine.data.synthetic_render import render_digits  # lazy: see the module doc

        total = n_test + (n_train if request.train else 0)

        def drawn(offset: int) -> Callable[[int], None]:
            return lambda done: progress.report(RENDERING, offset + done, total)

        test_x, test_y = render_digits(n_test, TEST_SEED, drawn(0))
        if not request.train:  # the training split is never rendered
            return {
                "train_x": test_x[:0],
                "train_y": test_y[:0],
                "test_x": test_x,
                "test_y": test_y,
            }
        train_x, train_y = render_digits(n_train, TRAIN_SEED, drawn(n_test))
        return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}

    cache = request.data_dir / "wmtui-cache"
    name = f"synthetic-v{RENDER_VERSION}-{n_train}-{n_test}.safetensors"
    if not request.train:
        name = f"synthetic-v{RENDER_VERSION}-test-{n_test}.safetensors"
    parts = cached(cache / name, build)
    return ImageSet("synthetic", classes=DIGITS, source="rendered (seeded)", **parts)
