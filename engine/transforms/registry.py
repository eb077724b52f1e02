"""Input transforms of a deployed model: the registry, the base class, and the spec format.

A transform is what an attacker who serves a stolen model puts in front of it: every query,
the verifier's included, passes through it (WRT ``wrt/preprocessors`` and its removal attacks
``wrt/attacks/removal/{jpeg_compression,input_smoothing,...}.py``). Transforms work on float
images in [0, 1] (the engine's one input convention), keep the shape, and are declared by a
name and a params dataclass, so a deployment is a plain JSON list of ``{"name", "params"}``
records that rebuilds without unpickling anything. A learnt transform (the denoising
autoencoder) also has weights, kept beside the spec as safetensors.

The forward pass is straight-through (BPDA, Athalye et al. 2018): ``x + (t(x) - x).detach()``
gives the transformed value but the identity's gradient, so training through a deployed model
(fine-tuning after JPEG, a chain's next step) still reaches the classifier even when the
transform has no gradient (JPEG, median, rounding).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import nn

from engine.registry import Registry, checked_params, spec_record

TransformFactory = Callable[[Any], "InputTransform"]
TRANSFORMS: Registry[TransformFactory] = Registry("transform")


class InputTransform(nn.Module):
    """One served transform with its validated params; subclasses implement :meth:`apply`.

    Always in eval mode and never trained by the classifier's optimiser: a deployment is
    fixed once the attacker has chosen it (a learnt one is fitted before it is deployed).
    """

    #: the registered name, set by :func:`register_transform`
    name: ClassVar[str] = ""
    #: whether the transform holds weights (saved in ``deploy.safetensors``)
    learnt: ClassVar[bool] = False

    def __init__(self, params: Any) -> None:
        super().__init__()
        self.params = params

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The transformed images (float, [0, 1], same shape): no gradient needed."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # full precision whatever the loop's autocast: a bf16 blur moves pixel values by more
        # than a JPEG at quality 100 does
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
            out = self.apply(x.detach().float()).to(x.dtype)
        return x + (out - x).detach()

    def resolved(self, seed: int) -> InputTransform:
        """This transform with its automatic values fixed from the attacker's ``seed`` (the
        noise's), so that ``deploy.json`` records what was served; most have none."""
        return self

    def spec(self) -> dict[str, Any]:
        """``{"name", "params"}``: what ``deploy.json`` records for this transform."""
        return {"name": self.name, "params": dataclasses.asdict(self.params)}

    def describe(self) -> str:
        """``jpeg(quality=95)``: one transform as a report or a log line shows it."""
        values = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.params).items())
        return f"{self.name}({values})"


def register_transform(name: str, params: type) -> Callable[[type], type]:
    """``@register_transform("jpeg", JpegParams)`` on an :class:`InputTransform` subclass."""

    def decorate(cls: type) -> type:
        cls.name = name  # type: ignore[attr-defined]
        TRANSFORMS.register(name, params)(cls)
        return cls

    return decorate


def make_transform(name: str, params: Any = None) -> InputTransform:
    """The transform ``name`` with validated params (a dataclass, or loose values to parse);
    an unknown name fails with the closest valid one."""
    plugin = TRANSFORMS.get(name)
    transform = plugin.factory(checked_params(plugin, name, params))
    transform.eval()
    transform.requires_grad_(False)
    return transform


def transform_from_spec(record: Any) -> InputTransform:
    """One ``{"name", "params"}`` record of ``deploy.json``, validated like a user's input."""
    return make_transform(*spec_record(record, "transform"))
