"""Classifier architectures by name; each is built for a dataset's input shape and classes."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from engine.models import classifiers as _classifiers  # noqa: F401  (registers models)
from engine.models import resnet as _resnet  # noqa: F401
from engine.models.ensemble import build_ensemble, is_ensemble_name
from engine.models.registry import MODELS
from engine.models.user import build_user_model, import_factory, is_factory_path


@dataclasses.dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild a model before loading its weights (saved as JSON)."""

    name: str
    in_shape: tuple[int, int, int]
    num_classes: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "in_shape": list(self.in_shape), "num_classes": self.num_classes}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Architecture:
        shape = tuple(int(v) for v in data["in_shape"])
        if len(shape) != 3:
            raise ValueError("in_shape must have 3 entries")
        return cls(str(data["name"]), shape, int(data["num_classes"]))  # type: ignore[arg-type]


def build_model(arch: Architecture) -> nn.Module:
    """Instantiate a registered architecture, or a user's ``package.module:factory``;
    unknown names suggest the closest one. ``ensemble-K-MODEL`` is K members of MODEL
    averaged (:mod:`engine.models.ensemble`: the ensemble attack's stolen model)."""
    if is_ensemble_name(arch.name):
        return build_ensemble(
            arch.name, arch.in_shape, arch.num_classes, lambda *a: build_model(Architecture(*a))
        )
    if is_factory_path(arch.name):
        return build_user_model(arch.name, arch.in_shape, arch.num_classes)
    factory = MODELS.get(arch.name).factory
    return factory(arch.in_shape, arch.num_classes)


def check_model_name(name: str) -> None:
    """A registered name, or a factory path that imports to a callable (not called yet)."""
    if is_factory_path(name):
        import_factory(name)
    else:
        MODELS.get(name)


__all__ = ["MODELS", "Architecture", "build_model", "check_model_name"]
