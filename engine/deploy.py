"""A deployed model: a classifier served behind input transforms every query passes through,
and answer filters every answer passes through.

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
list of ``{"name", "params"}`` transform records (and ``filters``, the answer filters'
records: :mod:`engine.filters`), and, when a transform or filter holds tensors,
``deploy.safetensors`` with them under ``<index>.<name>`` (``filter.<index>.<name>`` for a
filter). Nothing is unpickled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.errors import ConfigError, RunError
from engine.filters import AnswerFilter, filter_from_spec
from engine.io import atomic_write_json, load_tensors, read_json, save_tensors
from engine.transforms import InputTransform, transform_from_spec

DEPLOY_SPEC = "deploy.json"
DEPLOY_WEIGHTS = "deploy.safetensors"
#: prefix of an answer filter's tensors in ``deploy.safetensors``
FILTER_PREFIX = "filter."
#: the format of ``deploy.json``; a newer one is refused rather than misread
SPEC_VERSION = 1


class Deployed(nn.Module):
    """``inner`` served behind ``transforms``, applied in order to every input, and
    ``filters``, applied in order to every answer."""

    def __init__(
        self,
        inner: nn.Module,
        transforms: Sequence[InputTransform],
        filters: Sequence[AnswerFilter] = (),
    ) -> None:
        super().__init__()
        if isinstance(inner, Deployed):
            raise TypeError("Deployed.wrap extends a deployment; do not nest one in another")
        self.inner = inner
        # plain attributes, not submodules: the classifier's parameters, modules and state
        # dict stay exactly its own (see the module docstring)
        self._transforms: list[InputTransform] = list(transforms)
        self._filters: list[AnswerFilter] = list(filters)

    @classmethod
    def wrap(
        cls,
        model: nn.Module,
        transforms: Sequence[InputTransform] = (),
        filters: Sequence[AnswerFilter] = (),
    ) -> Deployed:
        """``model`` behind ``transforms`` and ``filters``; wrapping a deployed model appends
        to its lists, so preprocessing attacks compose (the earlier transform sees the query
        first, the earlier filter the answer first)."""
        device = next(model.parameters(), torch.empty(0)).device
        added = [t.to(device) for t in transforms]
        added_filters = [f.to(device) for f in filters]
        if isinstance(model, Deployed):
            return cls(model.inner, [*model.transforms, *added], [*model.filters, *added_filters])
        return cls(model, added, added_filters)

    @property
    def transforms(self) -> tuple[InputTransform, ...]:
        return tuple(self._transforms)

    @property
    def filters(self) -> tuple[AnswerFilter, ...]:
        return tuple(self._filters)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self._transforms:
            x = transform(x)
        logits = self.inner(x)
        for answer_filter in self._filters:
            logits = answer_filter(x, logits, self.inner)
        return logits

    def _apply(self, fn: Callable[..., Any], recurse: bool = True) -> Deployed:
        # .to(device), .half(), channels_last: the hidden transforms move with the model
        super()._apply(fn, recurse)
        for part in (*self._transforms, *self._filters):
            part._apply(fn, recurse)
        return self

    def spec(self) -> list[dict[str, Any]]:
        """The ordered transform records ``deploy.json`` holds."""
        return [t.spec() for t in self._transforms]

    def filter_spec(self) -> list[dict[str, Any]]:
        """The ordered answer-filter records ``deploy.json`` holds."""
        return [f.spec() for f in self._filters]

    def describe(self) -> str:
        """``jpeg(quality=95) -> median-smoothing(kernel=3)``: the served chain in one line
        (answer filters after a ``=>``)."""
        served = " -> ".join(t.describe() for t in self._transforms) or "model"
        if self._filters:
            served += " => " + " -> ".join(f.describe() for f in self._filters)
        return served


def unwrap(model: nn.Module) -> nn.Module:
    """The classifier behind a deployment (the model itself when it is not deployed)."""
    return model.inner if isinstance(model, Deployed) else model


def transforms_of(model: nn.Module) -> tuple[InputTransform, ...]:
    """The transforms ``model`` is served behind; none for a plain classifier."""
    return model.transforms if isinstance(model, Deployed) else ()


def filters_of(model: nn.Module) -> tuple[AnswerFilter, ...]:
    """The answer filters ``model`` serves its answers through; none for a plain one."""
    return model.filters if isinstance(model, Deployed) else ()


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
    tensors |= {
        f"{FILTER_PREFIX}{index}.{key}": value
        for index, answer_filter in enumerate(model.filters)
        if answer_filter.learnt
        for key, value in answer_filter.state_dict().items()
    }
    # weights first: a deploy.json that names a learnt transform always finds its weights
    if tensors:
        save_tensors(weights_path, tensors)
    else:
        weights_path.unlink(missing_ok=True)
    record: dict[str, Any] = {"version": SPEC_VERSION, "transforms": model.spec()}
    if model.filters:
        record["filters"] = model.filter_spec()
    atomic_write_json(spec_path, record)


def read_record(folder: Path) -> dict[str, Any] | None:
    """``folder``'s ``deploy.json``, checked: its ``transforms`` list (and ``filters`` list,
    when it has one); None when the run is not deployed."""
    path = folder / DEPLOY_SPEC
    if not path.is_file():
        return None
    record = read_json(path, "deployment spec")
    if not isinstance(record, dict) or not isinstance(record.get("transforms"), list):
        raise RunError(f"deployment spec is corrupt: {path} (no transforms list)")
    if not isinstance(record.setdefault("filters", []), list):
        raise RunError(f"deployment spec is corrupt: {path} (filters is not a list)")
    if record.get("version", SPEC_VERSION) != SPEC_VERSION:
        raise RunError(
            f"deployment spec {path} is version {record.get('version')!r}; "
            f"this wmtui reads version {SPEC_VERSION}"
        )
    return record


def read_spec(folder: Path) -> list[dict[str, Any]] | None:
    """The transform records of ``folder``'s deployment; None when the run is not deployed."""
    record = read_record(folder)
    return None if record is None else record["transforms"]


def _described(records: list[Any]) -> str:
    parts = []
    for record in records:
        params = record.get("params") if isinstance(record, dict) else None
        values = (
            ", ".join(f"{k}={v}" for k, v in params.items()) if isinstance(params, dict) else ""
        )
        name = record.get("name", "?") if isinstance(record, dict) else "?"
        parts.append(f"{name}({values})")
    return " -> ".join(parts)


def describe_deployment(folder: Path) -> str | None:
    """``jpeg(quality=95) -> median-smoothing(kernel=3)`` from ``folder``'s ``deploy.json``
    as recorded (a report shows it without rebuilding anything; answer filters follow a
    ``=>``); None when not deployed or unreadable."""
    try:
        record = read_record(folder)
    except RunError:
        return None
    if not record or not (record["transforms"] or record["filters"]):
        return None
    served = _described(record["transforms"]) or "model"
    if record["filters"]:
        served += " => " + _described(record["filters"])
    return served


def _load_state(
    parts: Sequence[InputTransform | AnswerFilter], tensors: dict[str, torch.Tensor], prefix: str
) -> None:
    for index, part in enumerate(parts):
        if not part.learnt:
            continue
        start = f"{prefix}{index}."
        state = {k[len(start) :]: v for k, v in tensors.items() if k.startswith(start)}
        try:
            part.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()[0]
            raise RunError(f"deployed weights do not match {part.name}: {first}") from None


def load_deployment(folder: Path, inner: nn.Module) -> nn.Module:
    """``inner`` behind the transforms and answer filters ``folder`` records (``inner``
    itself when none); each filter is bound to ``folder`` (its secret, if any, is there)."""
    record = read_record(folder)
    if record is None:
        return inner
    try:
        transforms = [transform_from_spec(r) for r in record["transforms"]]
        filters = [filter_from_spec(r) for r in record["filters"]]
    except ConfigError as exc:
        raise RunError(f"deployment spec {folder / DEPLOY_SPEC}: {exc}") from None
    # transforms' tensors were always un-prefixed: a filter's never start with a digit
    if any(part.learnt for part in (*transforms, *filters)):
        tensors = load_tensors(folder / DEPLOY_WEIGHTS, "deployed transform weights")
        _load_state(transforms, tensors, "")
        _load_state(filters, tensors, FILTER_PREFIX)
    for answer_filter in filters:
        answer_filter.bind(folder)
    device = next(inner.parameters(), torch.empty(0)).device
    if not (transforms or filters):
        return inner
    return Deployed(inner, transforms, filters).to(device)
