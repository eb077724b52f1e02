"""A deployed model: a classifier served behind input transforms every query passes through.

The SoK's input-preprocessing attacks (Lukas et al., S&P 2022; WRT
``wrt/attacks/removal/jpeg_compression.py`` and its siblings) leave the stolen weights alone
and change what the model is asked: JPEG, smoothing, noise... in front of it, for the owner's
verifier too. :class:`Deployed` is that served model. It behaves as a classifier everywhere
(verify, attack, detect, the referee), while the code that works on weights reaches the
classifier alone: the transforms are kept outside the module tree, so ``parameters()``,
``modules()`` and ``state_dict()`` are the classifier's (prefixed ``inner.``), and white-box
attacks that pick layers by type never touch an autoencoder's convolutions.

On disk a deployed run holds the classifier as any run does (``model.safetensors`` and
``model.json``: the architecture stays the classifier's), plus ``deploy.json``, the ordered
list of ``{"name", "params"}`` transform records, and, when a transform is learnt,
``deploy.safetensors`` with its weights under ``<index>.<name>``. Nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigError, RunError
from engine.io import atomic_write_json, load_tensors, read_json, save_tensors
from engine.transforms import InputTransform, transform_from_spec

DEPLOY_SPEC = "deploy.json"
DEPLOY_WEIGHTS = "deploy.safetensors"
#: the format of ``deploy.json``; a newer one is refused rather than misread
SPEC_VERSION = 1


class Deployed(nn.Module):
    """``inner`` served behind ``transforms``, applied in order to every input."""

    def __init__(self, inner: nn.Module, transforms: Sequence[InputTransform]) -> None:
        super().__init__()
        if isinstance(inner, Deployed):
            raise TypeError("Deployed.wrap extends a deployment; do not nest one in another")
        self.inner = inner
        # a plain attribute, not a submodule: the classifier's parameters, modules and state
        # dict stay exactly its own (see the module docstring)
        self._transforms: list[InputTransform] = list(transforms)

    @classmethod
    def wrap(cls, model: nn.Module, transforms: Sequence[InputTransform]) -> Deployed:
        """``model`` behind ``transforms``; wrapping a deployed model appends to its list, so
        preprocessing attacks compose (the earlier transform sees the query first)."""
        device = next(model.parameters(), torch.empty(0)).device
        added = [t.to(device) for t in transforms]
        if isinstance(model, Deployed):
            return cls(model.inner, [*model.transforms, *added])
        return cls(model, added)

    @property
    def transforms(self) -> tuple[InputTransform, ...]:
        return tuple(self._transforms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self._transforms:
            x = transform(x)
        return self.inner(x)

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> Deployed:
        # .to(device), .half(), channels_last: the hidden transforms move with the model
        super()._apply(fn, recurse)
        for transform in self._transforms:
            transform._apply(fn, recurse)
        return self

    def spec(self) -> list[dict[str, Any]]:
        """The ordered ``{"name", "params"}`` records ``deploy.json`` holds."""
        return [t.spec() for t in self._transforms]

    def describe(self) -> str:
        """``jpeg(quality=95) -> median-smoothing(kernel=3)``: the served chain in one line."""
        return " -> ".join(t.describe() for t in self._transforms)


def unwrap(model: nn.Module) -> nn.Module:
    """The classifier behind a deployment (the model itself when it is not deployed)."""
    return model.inner if isinstance(model, Deployed) else model


def transforms_of(model: nn.Module) -> tuple[InputTransform, ...]:
    """The transforms ``model`` is served behind; none for a plain classifier."""
    return model.transforms if isinstance(model, Deployed) else ()


def save_deployment(folder: Path, model: nn.Module) -> None:
    """Write ``deploy.json`` (and ``deploy.safetensors`` for learnt transforms) for a deployed
    model; for a plain one remove them, so a folder never describes a deployment it lost."""
    spec_path, weights_path = folder / DEPLOY_SPEC, folder / DEPLOY_WEIGHTS
    if not isinstance(model, Deployed):
        spec_path.unlink(missing_ok=True)
        weights_path.unlink(missing_ok=True)
        return
    tensors = {
        f"{index}.{key}": value
        for index, transform in enumerate(model.transforms)
        if transform.learnt
        for key, value in transform.state_dict().items()
    }
    # weights first: a deploy.json that names a learnt transform always finds its weights
    if tensors:
        save_tensors(weights_path, tensors)
    else:
        weights_path.unlink(missing_ok=True)
    atomic_write_json(spec_path, {"version": SPEC_VERSION, "transforms": model.spec()})


def read_spec(folder: Path) -> list[dict[str, Any]] | None:
    """The transform records of ``folder``'s deployment; None when the run is not deployed."""
    path = folder / DEPLOY_SPEC
    if not path.is_file():
        return None
    record = read_json(path, "deployment spec")
    if not isinstance(record, dict) or not isinstance(record.get("transforms"), list):
        raise RunError(f"deployment spec is corrupt: {path} (no transforms list)")
    if record.get("version", SPEC_VERSION) != SPEC_VERSION:
        raise RunError(
            f"deployment spec {path} is version {record.get('version')!r}; "
            f"this wmtui reads version {SPEC_VERSION}"
        )
    return record["transforms"]


def describe_deployment(folder: Path) -> str | None:
    """``jpeg(quality=95) -> median-smoothing(kernel=3)`` from ``folder``'s ``deploy.json``
    as recorded (a report shows it without rebuilding anything); None when not deployed or
    unreadable."""
    try:
        records = read_spec(folder)
    except RunError:
        return None
    if not records:
        return None
    parts = []
    for record in records:
        params = record.get("params") if isinstance(record, dict) else None
        values = (
            ", ".join(f"{k}={v}" for k, v in params.items()) if isinstance(params, dict) else ""
        )
        name = record.get("name", "?") if isinstance(record, dict) else "?"
        parts.append(f"{name}({values})")
    return " -> ".join(parts)


def load_deployment(folder: Path, inner: nn.Module) -> nn.Module:
    """``inner`` behind the transforms ``folder`` records (``inner`` itself when none)."""
    records = read_spec(folder)
    if records is None:
        return inner
    try:
        transforms = [transform_from_spec(r) for r in records]
    except ConfigError as exc:
        raise RunError(f"deployment spec {folder / DEPLOY_SPEC}: {exc}") from None
    if any(t.learnt for t in transforms):
        tensors = load_tensors(folder / DEPLOY_WEIGHTS, "deployed transform weights")
        for index, transform in enumerate(transforms):
            if not transform.learnt:
                continue
            prefix = f"{index}."
            state = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
            try:
                transform.load_state_dict(state)
            except RuntimeError as exc:
                first = str(exc).splitlines()[0]
                raise RunError(
                    f"deployed transform weights do not match {transform.name}: {first}"
                ) from None
    device = next(inner.parameters(), torch.empty(0)).device
    return Deployed(inner, transforms).to(device) if transforms else inner
