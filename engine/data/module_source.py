"""``package.module:factory``: a user's own dataset, built by their code.

The spelling is that of ``--model package.module:factory``; the module is importable from the
working directory too. The factory is called with no arguments and returns either an
:class:`~engine.data.base.ImageSet`, or a tuple ``(train_x, train_y, test_x, test_y)`` with an
optional fifth item, the class names:

* images: uint8 (0-255) torch tensors or NumPy arrays, ``[N, C, H, W]`` or ``[N, H, W, C]``
  with C = 1 or 3, or ``[N, H, W]`` (grey); both splits the same C, H, W; neither empty;
* labels: integer, one per image, in ``0 .. K-1``; K is the number of class names, else the
  largest label plus one, and at least 2.

Anything else is one line naming what is wrong. The result is not cached: the factory is the
user's, and so is deciding what is worth caching.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from engine.data.base import ImageSet
from engine.errors import ConfigError, DataError, UserError
from engine.factories import import_callable


def check_spelling(spec: str) -> str:
    """``package.module:function`` spelled right (nothing is imported yet)."""
    module_name, _, attr = spec.partition(":")
    parts = module_name.split(".") + attr.split(".")
    if not module_name or not attr or not all(p.isidentifier() for p in parts):
        raise ConfigError(
            f"dataset {spec!r}: write your own dataset as package.module:function or folder:PATH"
        )
    return spec


def import_factory(spec: str) -> Callable[[], Any]:
    """The callable behind the spec, importable from the working directory too."""
    return import_callable(check_spelling(spec), "--dataset", DataError)


def load_module_dataset(spec: str) -> ImageSet:
    """Call the factory (with no arguments: where its files are is its own business) and
    check what it returned."""
    factory = import_factory(spec)
    try:
        result = factory()
    except UserError:
        raise
    except Exception as exc:
        raise DataError(f"--dataset {spec!r}: the factory failed: {exc}") from None
    return as_image_set(spec, result)


def as_image_set(spec: str, result: object) -> ImageSet:
    """The factory's return value as an ImageSet named ``spec`` (what manifests and keys
    record), or a DataError saying which part breaks the contract."""
    where = f"--dataset {spec!r}"
    if isinstance(result, ImageSet):
        data = dataclasses.replace(result, name=spec, source=result.source or spec)
        _check_labels(where, "train_y", data.train_y, data.num_classes, unlabelled_ok=True)
        _check_labels(where, "test_y", data.test_y, data.num_classes)
        return data
    if not isinstance(result, tuple | list) or len(result) not in (4, 5):
        raise DataError(
            f"{where}: the factory returned {type(result).__name__}; return an ImageSet or "
            "(train_x, train_y, test_x, test_y[, classes])"
        )
    train_x, test_x = _images(where, "train_x", result[0]), _images(where, "test_x", result[2])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(
            f"{where}: train_x images are {tuple(train_x.shape[1:])} but test_x images are "
            f"{tuple(test_x.shape[1:])} (C, H, W)"
        )
    train_y = _labels(where, "train_y", result[1], len(train_x))
    test_y = _labels(where, "test_y", result[3], len(test_x))
    top = int(torch.cat([train_y, test_y]).max()) + 1
    classes = _classes(where, result[4], top) if len(result) == 5 else [str(i) for i in range(top)]
    if len(classes) < 2:
        raise DataError(f"{where}: only one class; a classifier needs two")
    for name, labels in (("train_y", train_y), ("test_y", test_y)):
        _check_labels(where, name, labels, len(classes))
    return ImageSet(spec, train_x, train_y, test_x, test_y, classes, source=spec)


def _tensor(where: str, name: str, value: object) -> torch.Tensor:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{where}: {name} is not a tensor or an array ({exc})") from None


def _images(where: str, name: str, value: object) -> torch.Tensor:
    x = _tensor(where, name, value)
    if x.dtype != torch.uint8:
        raise DataError(
            f"{where}: {name} is {str(x.dtype).removeprefix('torch.')}; images must be uint8 "
            "(0-255), e.g. (x * 255).round().to(torch.uint8)"
        )
    if x.dim() == 3:
        x = x.unsqueeze(1)
    elif x.dim() == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.permute(0, 3, 1, 2)
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"{where}: {name} has shape {tuple(x.shape)}; images must be [N, C, H, W] or "
            "[N, H, W, C] with C = 1 or 3, or [N, H, W]"
        )
    if len(x) == 0:
        raise DataError(f"{where}: {name} holds no images")
    return x.contiguous()


def _labels(where: str, name: str, value: object, count: int) -> torch.Tensor:
    y = _tensor(where, name, value)
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise DataError(
            f"{where}: {name} is {str(y.dtype).removeprefix('torch.')}; labels must be integers"
        )
    if y.dim() != 1 or len(y) != count:
        raise DataError(
            f"{where}: {name} has shape {tuple(y.shape)}; it must be [{count}], one label per image"
        )
    return y.long()


def _check_labels(
    where: str, name: str, labels: torch.Tensor, num_classes: int, *, unlabelled_ok: bool = False
) -> None:
    if len(labels) == 0:
        return
    low = -1 if unlabelled_ok else 0
    if int(labels.min()) < low or int(labels.max()) >= num_classes:
        raise DataError(
            f"{where}: {name} holds labels from {int(labels.min())} to {int(labels.max())}; "
            f"with {num_classes} classes they must be in 0..{num_classes - 1}"
        )


def _classes(where: str, value: object, top: int) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise DataError(f"{where}: the fifth item must be a list of class names")
    names = [str(v) for v in value]
    if len(names) < top:
        raise DataError(f"{where}: {len(names)} class names but labels go up to {top - 1}")
    return names
