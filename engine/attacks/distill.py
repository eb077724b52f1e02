"""``distill``: model extraction by distillation into a fresh student.

The student (any registered architecture) never sees the suspect's weights, only its soft
outputs ``softmax(teacher(x) / T)`` on the attacker's unlabelled images. The one training
loop computes ``cross_entropy(model(x), y)``; with class-probability targets and the student
wrapped to emit ``logits / T`` this *is* Hinton et al.'s soft-target loss (up to the constant
T^2 gradient scale, which the learning rate absorbs), so no second loop is needed. Every
source of a distillation run gives soft targets: labelled images, if the budget has any and
``--labeled-batch`` asks for them, enter as one-hot probability vectors.

Like every extraction attack it asks the suspect once per unlabelled image, through
:func:`~engine.attacks.stealing.ask_within_budget` (the ``--queries`` cap, ``--answers``), and
keeps the answers. An API answers probabilities ``p = softmax(z)``, and the thief softens
them itself: ``softmax(log p / T) = softmax(z / T)``. With ``--answers labels`` the targets
are the one-hot top classes, which no temperature changes.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.common import TuneParams
from engine.attacks.registry import EXTRACTION, Attack, AttackEnv, AttackResult, register_attack
from engine.attacks.stealing import ask_within_budget, fresh_model
from engine.errors import ConfigError
from engine.models import MODELS, Architecture
from engine.registry import param
from engine.training import Source


@dataclasses.dataclass(frozen=True)
class DistillParams(TuneParams):
    student: str = param("", "student architecture (empty: the suspect's own)")
    temperature: float = param(
        1.0,
        "softmax temperature of the teacher's outputs and the student's logits",
        low=0.0,
        high=100.0,
        low_open=True,
    )
    batch: int = param(100, "queried (unlabelled) images per step", low=1, high=65_536)
    labeled_batch: int = param(
        0,
        "labelled images per step with one-hot targets beside the queries (0: none)",
        low=0,
        high=65_536,
    )
    lr: float = param(0.05, "initial learning rate", low=0.0, high=100.0, low_open=True)
    schedule: str = param(
        "cosine", "learning-rate schedule", choices=("constant", "step", "cosine")
    )


class Tempered(nn.Module):
    """``student(x) / T``: makes the loop's cross-entropy the soft-target distillation loss."""

    def __init__(self, student: nn.Module, temperature: float) -> None:
        super().__init__()
        self.student = student
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x) / self.temperature


def softened(answers: torch.Tensor, temperature: float) -> torch.Tensor:
    """The suspect's probabilities at ``temperature``: ``softmax(log p / T)``, which is
    ``softmax(z / T)`` of its logits ``z``. One-hot answers (``--answers labels``) stay one-hot."""
    if temperature == 1.0:
        return answers
    tiny = torch.finfo(answers.dtype).tiny
    return F.softmax(answers.clamp_min(tiny).log() / temperature, dim=1)


@register_attack("distill", DistillParams, family=EXTRACTION)
class Distill(Attack[DistillParams]):
    """Extraction: train a fresh student on the suspect's soft outputs over unlabelled data."""

    def __init__(self, params: DistillParams) -> None:
        super().__init__(params)
        if params.student:
            MODELS.get(params.student)

    def check_budget(self, budget: AttackerBudget) -> None:
        if not budget.unlabeled:
            raise ConfigError("distill queries the suspect on unlabelled data: give --unlabeled")
        if self.params.labeled_batch and budget.data_fraction == 0:
            raise ConfigError("distill --labeled-batch needs labelled data: --data-fraction > 0")

    def planned_steps(self, data: AttackerData) -> int:
        n, cap = len(data.unlabeled_x), data.budget.queries
        return data.total_steps(min(n, cap) if cap > 0 else n, self.params.batch)

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        if not data.has_unlabeled:
            raise ConfigError("distill queries the suspect on unlabelled data: give --unlabeled")
        data.used.add("unlabeled")
        x, answers = ask_within_budget(model, data.unlabeled_x, env, data.budget.answers)
        student, student_arch = fresh_model(arch, p.student, data.seed, env.device)
        targets = softened(answers, p.temperature)
        sources = [Source("attacker-unlabeled", x, p.batch, y=targets)]
        if p.labeled_batch:
            data.used.add("labeled")
            one_hot = F.one_hot(data.labeled_y, data.num_classes).float()
            sources.append(Source("attacker-labeled", data.labeled_x, p.labeled_batch, y=one_hot))
        report = env.train(
            Tempered(student, p.temperature),
            sources,
            p.settings(),
            steps=data.total_steps(len(x), p.batch),
        )
        info = {
            "student": student_arch.name,
            "loss": report.loss,
            "queries": len(x),
            "answers": data.budget.answers,
        }
        return AttackResult(student, student_arch, report.steps, info)
