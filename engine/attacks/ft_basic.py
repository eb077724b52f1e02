"""``ft-basic``: REFIT's basic fine-tuning (Chen et al., "Leveraging unlabeled data for
watermark removal of deep neural networks").

The whole model is fine-tuned on the attacker's labelled data with a large initial learning
rate, 0.05, decayed by 0.9 every 500 steps, batch 100, SGD (their Section 4 and Appendix A).
The paper's point is the schedule: the same procedure at 0.001 (``finetune --mode ftal``)
leaves the watermark in place.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.common import TuneParams
from engine.attacks.registry import AttackEnv, AttackResult, LabelledAttack, register_attack
from engine.errors import ConfigError
from engine.models import Architecture
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class FTBasicParams(TuneParams):
    lr: float = param(
        0.05, "initial learning rate (REFIT: 0.05)", low=0.0, high=100.0, low_open=True
    )
    schedule: str = param(
        "step",
        "learning-rate schedule (REFIT: x gamma every step-size steps)",
        choices=("constant", "step", "cosine"),
    )
    step_size: int = param(500, "steps between decays (REFIT: 500)", low=1)
    gamma: float = param(0.9, "decay factor (REFIT: 0.9)", low=0.0, high=1.0, low_open=True)


@register_attack("ft-basic", FTBasicParams)
class FTBasic(LabelledAttack[FTBasicParams]):
    """REFIT FT-Basic: whole model, lr 0.05 x0.9 every 500 steps, batch 100."""

    label = "ft-basic"
    without_labels = "use ftau --unlabeled DATASET"

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        if not data.has_labeled:
            raise ConfigError(
                "ft-basic needs labelled data (--data-fraction > 0); with none, use ftau"
                " --unlabeled DATASET"
            )
        report = env.train(
            model, [data.labeled_source(p.batch)], p.settings(), steps=self.planned_steps(data)
        )
        return AttackResult(model, arch, report.steps, {"loss": report.loss})
