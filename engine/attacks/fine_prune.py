"""``fine-prune``: Liu et al. (2018) fine-pruning, as REFIT's Appendix A evaluates it.

Prune the units least active on clean data (the last conv layer by default), then fine-tune
with the pruned units held at zero. REFIT ran it "with the same fine-tuning learning rate
schedule as our proposed variants", so the defaults are FT-Basic's (lr 0.05, x0.9 every 500
steps, batch 100).
"""

from __future__ import annotations

import dataclasses

from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.ft_basic import FTBasicParams
from engine.attacks.prune import PruneParams, masks_held, prune_model
from engine.attacks.registry import AttackEnv, AttackResult, LabelledAttack, register_attack
from engine.models import Architecture
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class FinePruneParams(FTBasicParams):
    ratio: float = param(
        0.5, "fraction of units to prune before fine-tuning", low=0.0, high=1.0, high_open=True
    )
    layers: str = param(
        "last",
        "prune the last conv layer (Liu et al.), or every conv and hidden layer",
        choices=("last", "all"),
    )
    samples: int = param(
        2000, "clean images whose mean activations rank the units", low=1, high=1_000_000
    )


@register_attack("fine-prune", FinePruneParams)
class FinePrune(LabelledAttack[FinePruneParams]):
    """Fine-pruning: prune least-active neurons on clean data, then fine-tune (FT-Basic LR)."""

    label = "fine-prune"

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        prune = PruneParams(method="neuron", ratio=p.ratio, layers=p.layers, samples=p.samples)
        masks, info = prune_model(model, data, prune)
        env.log(f"pruned {info['units_pruned']} units before fine-tuning")
        with masks_held(masks):
            report = env.train(
                model,
                [data.labeled_source(p.batch)],
                p.settings(),
                steps=self.planned_steps(data),
            )
        return AttackResult(model, arch, report.steps, {**info, "loss": report.loss})
