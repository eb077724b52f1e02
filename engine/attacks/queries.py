"""How many answers an attack asked of the suspect model.

Extraction and pseudo-labelling attacks (distill, ftau) learn from the suspect's answers, and
the SoK compares attacks by what they cost (Lukas et al., S&P 2022, Section V): the counter
is an :class:`~engine.attacks.registry.AttackEnv` service the referee reads after the attack,
so an attack cannot forget to report its queries, and a later query budget has one place to
enforce its cap. Weight-only attacks never touch it and report 0.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle


class QueryCounter:
    """Images the suspect model was asked to answer for: one per image of every batch a
    counted model (:meth:`watch`) was called on."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, images: int) -> None:
        self.count += int(images)

    def watch(self, model: nn.Module) -> RemovableHandle:
        """Count every forward pass of ``model`` (the suspect's frozen copy, which answers)."""

        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if inputs and hasattr(inputs[0], "shape") and len(inputs[0].shape):
                self.add(inputs[0].shape[0])

        return model.register_forward_pre_hook(hook)
