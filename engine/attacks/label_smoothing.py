"""``label-smoothing``: fine-tune on the attacker's images against smoothed labels.

Lukas et al., "SoK: How Robust is Image Classification Deep Neural Network Watermarking?",
IEEE S&P 2022; WRT ``wrt/attacks/removal/label_smoothing.py`` and
``configs/cifar10/attack_configs/label_smoothing.yaml`` (ε 0.3, 5 epochs, the attacker's
images labelled by the suspect). Each one-hot label ``y`` becomes
``(1 - ε)·y + ε/K`` over the K classes (WRT's ``Trainer`` with ``epsilon``), the
cross-entropy against it being the loop's ordinary loss on soft targets, so no second loss
is needed. Smoothing caps the confidence the model may keep on any label, which is what
trigger labels live on. WRT also raises the owner's learning rate tenfold for this attack
(``classifier.lr * 10``); ``lr`` here defaults to the owner's rate like the other SoK
fine-tunes, and ``--lr 0.5`` is WRT's rise over our owners' 0.05. Epochs are the budget's
(WRT: 5, ``--epochs 5``).
"""

from __future__ import annotations

import dataclasses

import torch.nn.functional as F
from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.registry import MODIFICATION, AttackEnv, AttackResult, register_attack
from engine.attacks.sok_tuning import SoKTuneAttack, SoKTuneParams
from engine.models import Architecture
from engine.registry import param
from engine.training import Source


@dataclasses.dataclass(frozen=True)
class LabelSmoothingParams(SoKTuneParams):
    epsilon: float = param(
        0.3, "weight of the uniform distribution in every label (WRT: 0.3)", low=0.0, high=1.0
    )


@register_attack("label-smoothing", LabelSmoothingParams, family=MODIFICATION)
class LabelSmoothing(SoKTuneAttack[LabelSmoothingParams]):
    """Fine-tune against labels smoothed with epsilon 0.3 (WRT), the suspect's labels."""

    label = "label-smoothing"

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        x, y = self.targets(model, data, env.queries)
        # over the model's outputs, not the dataset's classes: a new-label model has one more
        classes = arch.num_classes
        hard = F.one_hot(y, classes).float()
        soft = (1.0 - p.epsilon) * hard + p.epsilon / classes
        source = Source("attacker-smoothed", x, p.batch, y=soft)
        report = env.train(model, [source], p.settings(), steps=self.planned_steps(data))
        info = {"epsilon": p.epsilon, "labels": p.labels, "loss": report.loss}
        return AttackResult(model, arch, report.steps, info)
