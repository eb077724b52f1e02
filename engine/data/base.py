"""The in-memory form of every dataset: uint8 image tensors that live on the device."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class ImageSet:
    """A labelled image dataset as uint8 tensors [N, C, H, W] and int64 labels.

    Images stay uint8 so a whole dataset fits on the device cheaply; batches are sliced there
    and turned into floats in [0, 1] only when used (:func:`as_float`). Unlabelled sets use
    label -1.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str = ""

    def __post_init__(self) -> None:
        for split, x, y in (
            ("train", self.train_x, self.train_y),
            ("test", self.test_x, self.test_y),
        ):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise ValueError(f"{self.name} {split} images must be uint8 [N,C,H,W]")
            if len(x) != len(y):
                raise ValueError(f"{self.name} {split}: {len(x)} images but {len(y)} labels")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def to(self, device: torch.device | str) -> ImageSet:
        move = {f: getattr(self, f).to(device) for f in ("train_x", "train_y", "test_x", "test_y")}
        return dataclasses.replace(self, **move)

    def limit(self, train_size: int = 0, test_size: int = 0) -> ImageSet:
        """Keep the first N images of each split (0 keeps all): quick runs and tests."""

        def cut(x: torch.Tensor, n: int) -> torch.Tensor:
            return x[:n] if n else x

        return dataclasses.replace(
            self,
            train_x=cut(self.train_x, train_size),
            train_y=cut(self.train_y, train_size),
            test_x=cut(self.test_x, test_size),
            test_y=cut(self.test_y, test_size),
        )

    def without_train(self) -> ImageSet:
        """The training split emptied (kept shaped): whatever loaded it, nothing downstream
        can train on it."""
        return dataclasses.replace(self, train_x=self.train_x[:0], train_y=self.train_y[:0])


def as_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> floats in [0, 1]: the one input convention of every model and trigger.
    Float images (data-free triggers, which may overflow [0, 1] on purpose) pass unchanged,
    as a copy."""
    if x.dtype != torch.uint8:
        return x.to(torch.float32, copy=True)
    return x.float().div_(255.0)
