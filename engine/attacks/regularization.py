"""``regularization``: fine-tune under a strong L2 penalty, then fine-tune without it.

Lukas et al., "SoK: How Robust is Image Classification Deep Neural Network Watermarking?",
IEEE S&P 2022; WRT ``wrt/attacks/removal/regularization.py`` and
``configs/cifar10/attack_configs/regularization.yaml`` (L2 0.1 for 5 epochs, then up to 50
epochs of fine-tuning with early stopping at patience 5; ``regularization1.yaml``: 0.25 for 3
epochs). WRT sets the optimiser's weight decay to the L2 strength for the first phase (SGD's
coupled L2: ``λ·w`` added to every gradient) and restores the owner's for the second; so do
we, through the loop's own weight decay, one training phase each. The first phase shrinks
every weight towards zero, the triggers' rarely-used ones most; the second wins the test
accuracy back from the attacker's data.

Both phases share the budget's steps (its epochs over the attacker's images, or
``--steps``): ``reg_share`` of them (0.5) under the penalty, the rest after. At the budget's
default 10 epochs that is WRT's 5 epochs of regularisation and 5 of fine-tuning, its
early-stopping patience; the attacker has no validation set here to stop on.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.registry import MODIFICATION, AttackEnv, AttackResult, register_attack
from engine.attacks.sok_tuning import SoKTuneAttack, SoKTuneParams
from engine.models import Architecture
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class RegularizationParams(SoKTuneParams):
    l2: float = param(0.1, "L2 strength (weight decay) of the first phase (WRT: 0.1)", low=0.0)
    reg_share: float = param(
        0.5,
        "share of the steps under the L2 penalty; the rest fine-tune without it",
        low=0.0,
        high=1.0,
        low_open=True,
    )


def phase_steps(total: int, share: float) -> tuple[int, int]:
    """``(penalised, fine-tuning)`` steps: at least one penalised; the rest, maybe none."""
    penalised = min(total, max(1, round(total * share)))
    return penalised, total - penalised


@register_attack("regularization", RegularizationParams, family=MODIFICATION)
class Regularization(SoKTuneAttack[RegularizationParams]):
    """Fine-tune with L2 0.1 (WRT), then without, on the suspect's labels."""

    label = "regularization"

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        source = self.source(model, data, env.queries)
        penalised, tuning = phase_steps(self.planned_steps(data), p.reg_share)
        strong = dataclasses.replace(p.settings(), weight_decay=p.l2)
        env.log(f"L2 {p.l2} for {penalised} steps, then fine-tuning for {tuning}")
        first = env.train(model, [source], strong, steps=penalised)
        info = {"l2": p.l2, "penalised_steps": penalised, "labels": p.labels, "loss": first.loss}
        steps = first.steps
        if tuning:
            second = env.train(model, [source], p.settings(), steps=tuning)
            steps += second.steps
            info["loss"] = second.loss
        return AttackResult(model, arch, steps, info)
