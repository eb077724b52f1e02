"""``finetune``: the classic fine-tuning baselines FTLL, FTAL, RTLL and RTAL.

From Adi et al. (2018), the baselines REFIT argues were run with too small a learning rate:
fine-tune the last layer (FTLL) or all layers (FTAL), optionally after re-initialising the
last layer (RTLL, RTAL). The default rate, 0.001, is theirs: the low-LR baseline that leaves
watermarks in place.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.common import HeadOnly, TuneParams, last_layer, only_trainable, reinitialise
from engine.attacks.registry import AttackEnv, AttackResult, LabelledAttack, register_attack
from engine.models import Architecture
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class FinetuneParams(TuneParams):
    mode: str = param(
        "ftal",
        "ftll/rtll: last layer only; ftal/rtal: all layers; rt*: re-initialise the last layer",
        choices=("ftll", "ftal", "rtll", "rtal"),
    )


@register_attack("finetune", FinetuneParams)
class Finetune(LabelledAttack[FinetuneParams]):
    """Fine-tuning baselines FTLL/FTAL/RTLL/RTAL on the attacker's labelled data (lr 0.001)."""

    label = "finetune"

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        head = last_layer(model)
        if p.mode.startswith("rt"):
            reinitialise(head, data.seed)
        source = data.labeled_source(p.batch)
        steps = self.planned_steps(data)
        if p.mode.endswith("ll"):
            with only_trainable(model, head):
                report = env.train(
                    HeadOnly(model, head),
                    [source],
                    p.settings(),
                    steps=steps,
                    params=head.parameters(),
                )
        else:
            report = env.train(model, [source], p.settings(), steps=steps)
        return AttackResult(model, arch, report.steps, {"mode": p.mode, "loss": report.loss})
