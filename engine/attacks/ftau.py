"""``ftau``: REFIT's fine-tuning with augmentation of unlabelled data.

FT-Basic's schedule, plus unlabelled images annotated by the suspect model itself
(``y_u = f_theta(x_u)``, hard labels from a frozen copy taken before fine-tuning). Appendix A:
each batch holds 100 labelled and 50 unlabelled images; with no labelled data, 100
unlabelled. The unlabelled source may be out of distribution (STL-10 for CIFAR in the
paper; ``synthetic`` for fashion-mnist here).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.common import frozen_copy, pseudo_labeller
from engine.attacks.ft_basic import FTBasicParams
from engine.attacks.registry import Attack, AttackEnv, AttackResult, register_attack
from engine.errors import ConfigError
from engine.models import Architecture
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class FTAUParams(FTBasicParams):
    unlabeled_batch: int = param(
        50,
        "pseudo-labelled images per step beside the labelled ones (REFIT: 50)",
        low=1,
        high=65_536,
    )
    unlabeled_only_batch: int = param(
        100,
        "pseudo-labelled images per step when there is no labelled data (REFIT: 100)",
        low=1,
        high=65_536,
    )


@register_attack("ftau", FTAUParams)
class FTAU(Attack[FTAUParams]):
    """REFIT FTAU: FT-Basic plus unlabelled data pseudo-labelled by the suspect model."""

    def check_budget(self, budget: AttackerBudget) -> None:
        if not budget.unlabeled:
            raise ConfigError("ftau needs an unlabelled source: give --unlabeled DATASET")

    def planned_steps(self, data: AttackerData) -> int:
        p = self.params
        if data.has_labeled:
            return data.total_steps(len(data.labeled_x), p.batch)
        return data.total_steps(len(data.unlabeled_x), p.unlabeled_only_batch)

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        if not data.has_unlabeled:
            raise ConfigError("ftau needs an unlabelled source: give --unlabeled DATASET")
        label = pseudo_labeller(frozen_copy(model, env.queries))
        if data.has_labeled:
            sources = [
                data.labeled_source(p.batch),
                data.unlabeled_source(p.unlabeled_batch, label),
            ]
        else:
            sources = [data.unlabeled_source(p.unlabeled_only_batch, label)]
        report = env.train(model, sources, p.settings(), steps=self.planned_steps(data))
        info = {
            "loss": report.loss,
            "unlabeled": data.unlabeled_name,
            "unlabeled_images": len(data.unlabeled_x),
        }
        return AttackResult(model, arch, report.steps, info)
