"""Answer filters of a deployed model: what the server does to the classifier's answers.

Input transforms (:mod:`engine.transforms`) change what the served classifier is asked; an
answer filter changes what it answers. Both sides of the SoK's query-level game are filters:
the owner's API that answers a keyed fraction of queries wrongly so a thief's copy learns a
watermark (DAWN, Szyller et al. 2021), and the thief's server that spots trigger-like queries
and answers them wrongly so the owner cannot verify (STRIP-filtered evasion, Gao et al. 2019;
Hitaj et al. 2019). A filter sees the float input the classifier saw, its logits, and the
classifier itself (STRIP queries it again with blended copies), and returns logits.

Like a transform, a filter is a name and a params dataclass in ``deploy.json``; one that
holds tensors (STRIP's clean images and its entropy threshold) keeps them in
``deploy.safetensors``; one whose secret is the owner's (DAWN's key) reads it from the run's
0600 ``key/`` folder through :meth:`AnswerFilter.bind`, never from the deployment files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from engine.registry import Registry, checked_params, spec_record

FilterFactory = Callable[[Any], "AnswerFilter"]
FILTERS: Registry[FilterFactory] = Registry("answer filter")


class AnswerFilter(nn.Module):
    """One served answer filter with its validated params; subclasses implement
    :meth:`forward`. Never trained by the classifier's optimiser."""

    #: the registered name, set by :func:`register_filter`
    name: ClassVar[str] = ""
    #: whether the filter holds tensors (saved in ``deploy.safetensors``)
    learnt: ClassVar[bool] = False

    def __init__(self, params: Any) -> None:
        super().__init__()
        self.params = params

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, logits: torch.Tensor, inner: nn.Module
    ) -> torch.Tensor:
        """The answers served for the float inputs ``x`` given the classifier's ``logits``."""
        raise NotImplementedError

    def bind(self, folder: Path) -> None:
        """Read what the filter keeps outside the deployment files (an owner's secret in
        ``folder/key``) when the run at ``folder`` is loaded; nothing by default."""

    def spec(self) -> dict[str, Any]:
        """``{"name", "params"}``: what ``deploy.json`` records for this filter."""
        return {"name": self.name, "params": dataclasses.asdict(self.params)}

    def describe(self) -> str:
        values = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.params).items())
        return f"{self.name}({values})"


def register_filter(name: str, params: type) -> Callable[[type], type]:
    """``@register_filter("strip", StripParams)`` on an :class:`AnswerFilter` subclass."""

    def decorate(cls: type) -> type:
        cls.name = name  # type: ignore[attr-defined]
        FILTERS.register(name, params)(cls)
        return cls

    return decorate


def make_filter(name: str, params: Any = None) -> AnswerFilter:
    """The filter ``name`` with validated params (a dataclass, or loose values to parse)."""
    plugin = FILTERS.get(name)
    made = plugin.factory(checked_params(plugin, name, params))
    made.eval()
    made.requires_grad_(False)
    return made


def filter_from_spec(record: Any) -> AnswerFilter:
    """One ``{"name", "params"}`` record of ``deploy.json``'s filters, validated like input."""
    return make_filter(*spec_record(record, "filter"))
