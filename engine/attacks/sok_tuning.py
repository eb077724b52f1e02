"""What the SoK's model-modification attacks share: the attacker's fine-tuning data and its
labels, and the optimiser they fine-tune with.

In the Watermark-Robustness-Toolbox (Lukas et al., "SoK: How Robust is Image Classification
Deep Neural Network Watermarking?", IEEE S&P 2022; WRT ``steal.py`` and
``configs/cifar10/attack_configs/*.yaml``) every such attack fine-tunes the suspect model on
the attacker's images at batch 64, with the owner's own optimiser (SGD, momentum 0.9, weight
decay 5e-4 in WRT's ``configs/cifar10/wm_configs``), and, unless a config says
``true_labels: True``, the labels are the suspect model's own predictions on those images:
the attacker needs images, not ground truth. Both choices are params here, so a study can
also grant the attacker true labels. The learning rate defaults to our owners' default
(0.05, ``wmtui embed``), the rate WRT's attacks inherit from the owner.
"""

from __future__ import annotations

import dataclasses
from typing import TypeVar

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.common import TuneParams, frozen_copy
from engine.attacks.queries import QueryCounter
from engine.attacks.registry import Attack
from engine.data import as_float
from engine.errors import ConfigError
from engine.registry import param
from engine.training import Source

P = TypeVar("P", bound="SoKTuneParams")


@dataclasses.dataclass(frozen=True)
class SoKTuneParams(TuneParams):
    """Fine-tuning of a SoK modification attack: WRT's batch, the owner's optimiser."""

    lr: float = param(
        0.05,
        "learning rate (WRT: the owner's; ours train at 0.05)",
        low=0.0,
        high=100.0,
        low_open=True,
    )
    batch: int = param(64, "images per step (WRT's cifar10 configs: 64)", low=1, high=65_536)
    labels: str = param(
        "suspect",
        "suspect: the suspect model labels the attacker's images (WRT); true: their labels",
        choices=("suspect", "true"),
    )


@torch.no_grad()
def suspect_labels(
    model: nn.Module, images: torch.Tensor, queries: QueryCounter | None = None, chunk: int = 512
) -> torch.Tensor:
    """The suspect's hard labels for ``images`` (uint8), asked once before the attack changes
    the model, as WRT labels its loader with the source model."""
    teacher = frozen_copy(model, queries)
    out = [teacher(as_float(images[i : i + chunk])).argmax(1) for i in range(0, len(images), chunk)]
    return torch.cat(out) if out else images.new_zeros((0,), dtype=torch.long)


class SoKTuneAttack(Attack[P]):
    """An attack that fine-tunes on the attacker's images with :class:`SoKTuneParams`."""

    label: str = "this attack"

    def check_budget(self, budget: AttackerBudget) -> None:
        if self.params.labels == "true" and budget.data_fraction == 0:
            raise ConfigError(
                f"{self.label} --labels true needs labelled data (--data-fraction > 0)"
            )
        if budget.data_fraction == 0 and not budget.unlabeled:
            raise ConfigError(
                f"{self.label} fine-tunes on the attacker's images: give --data-fraction > 0 "
                "or --unlabeled DATASET"
            )

    def images(self, data: AttackerData) -> torch.Tensor:
        """The images it fine-tunes on: the labelled fraction, else the unlabelled source."""
        if self.params.labels == "true":
            if not data.has_labeled:
                raise ConfigError(f"{self.label} --labels true needs labelled data")
            return data.labeled_x
        if data.has_labeled:
            return data.labeled_x
        if data.has_unlabeled:
            return data.unlabeled_x
        raise ConfigError(f"{self.label} needs the attacker's images: give --data-fraction > 0")

    def planned_steps(self, data: AttackerData) -> int:
        return data.total_steps(len(self.images(data)), self.params.batch)

    def targets(
        self, model: nn.Module, data: AttackerData, queries: QueryCounter | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images, labels)`` to fine-tune on; the suspect answers for each image once."""
        x = self.images(data)
        if self.params.labels == "true":
            data.used.add("labeled")
            return x, data.labeled_y
        data.used.add("labeled-images" if x is data.labeled_x else "unlabeled")
        return x, suspect_labels(model, x, queries)

    def source(self, model: nn.Module, data: AttackerData, queries: QueryCounter | None) -> Source:
        """One source of the attacker's images, ``batch`` per step, hard labels."""
        x, y = self.targets(model, data, queries)
        return Source("attacker", x, self.params.batch, y=y)
