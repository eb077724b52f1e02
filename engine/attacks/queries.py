"""How many answers an attack asked of the suspect model.

Extraction and pseudo-labelling attacks (distill, ftau) learn from the suspect's answers, and
the SoK compares attacks by what they cost (Lukas et al., S&P 2022, Section V): the counter
is an :class:`~engine.attacks.registry.AttackEnv` service the referee reads after the attack,
so an attack cannot forget to report its queries, and the budget's ``--queries`` cap is
enforced in this one place: an answer past it is refused with :class:`QueryBudgetSpent`,
which an attack that queries in rounds catches to train on what it has, and which otherwise
stops the job with the reason. Weight-only attacks never touch it and report 0.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn
from torch.utils.hooks import RemovableHandle

from engine.stopping import StopRequested


class QueryBudgetSpent(StopRequested):
    """The suspect was asked for more answers than the budget's ``--queries`` allows; none of
    the refused batch was answered. A stop: uncaught, it ends the job as a Stop does (status
    ``stopped``), with this reason in the summary."""

    def __init__(self, cap: int, count: int, asked: int) -> None:
        super().__init__(f"query budget spent: {count} of {cap} answers given, {asked} more asked")
        self.cap = cap
        self.count = count
        self.asked = asked


class QueryCounter:
    """Images the suspect model was asked to answer for: one per image of every batch a
    counted model (:meth:`watch`) was called on; ``cap`` (0: none) is the most it answers."""

    def __init__(self, cap: int = 0) -> None:
        self.count = 0
        self.cap = int(cap)
        #: told after every counted batch (the referee's live counter); never per image
        self.listener: Callable[[QueryCounter], None] | None = None

    @property
    def remaining(self) -> int | None:
        """Answers still allowed; None without a cap."""
        return None if self.cap <= 0 else max(0, self.cap - self.count)

    def add(self, images: int) -> None:
        images = int(images)
        if self.cap > 0 and self.count + images > self.cap:
            raise QueryBudgetSpent(self.cap, self.count, images)
        self.count += images
        if self.listener is not None:
            self.listener(self)

    def watch(self, model: nn.Module) -> RemovableHandle:
        """Count every forward pass of ``model`` (the suspect's frozen copy, which answers)."""

        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if inputs and hasattr(inputs[0], "shape") and len(inputs[0].shape):
                self.add(inputs[0].shape[0])

        return model.register_forward_pre_hook(hook)
