"""``retraining`` and ``cross-retraining``: a fresh model trained on the suspect's answers.

The SoK's retraining attack (Lukas et al., S&P 2022; WRT ``wrt/attacks/removal/retraining.py``,
``ModelExtractionBB``, after Tramèr et al. 2016): the thief has the suspect label its own
images (``true_labels: False``) and trains a model from scratch on those answers with a
soft-label cross-entropy. Nothing of the suspect but its answers reaches the new model, so a
watermark survives only if the suspect's answers on ordinary images carry it.

Both plugins are this one attack and differ only in the default architecture, as WRT's two
configs differ only in ``surrogate_model``: ``configs/cifar10/attack_configs/retraining.yaml``
trains the suspect's own architecture (a wide ResNet there), and
``cross_architecture_retraining.yaml`` another one (a DenseNet against that ResNet).
Optimisation defaults are WRT's (:class:`~engine.attacks.stealing.ExtractionParams`); its 60
epochs are the budget's ``--epochs``.

The transfer set (``--unlabeled``, else the labelled fraction's images without their labels)
is answered once, each image one query within ``--queries``; ``--answers labels`` gives the
student one-hot targets (WRT's ``top_k``), ``probs`` the suspect's probabilities.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import (
    EXTRACTION,
    Attack,
    AttackEnv,
    AttackResult,
    TrainReport,
    register_attack,
)
from engine.attacks.stealing import ExtractionParams, ask_transfer_set, fresh_model
from engine.errors import ConfigError
from engine.models import MODELS, Architecture, check_model_name
from engine.registry import param
from engine.training import Source

#: ``--student auto``: another architecture made for the suspect's inputs
AUTO = "auto"
#: ``auto``'s candidates by input channels, first that differs from the suspect's own. For
#: 28x28 grey images ``digit-cnn`` (two wide convolutions and a 512-unit layer, the Digit
#: model of the null-embedding paper) against ``lenet5``'s narrow 6/16 filters and 120-84
#: head: another design of about the same depth that still trains in seconds on a CPU, as
#: WRT pits a DenseNet against its ResNet. For colour images ``object-cnn`` (plain VGG-like
#: convolutions) against ``resnet18``'s residual blocks.
CROSS_CANDIDATES = {1: ("digit-cnn", "lenet5", "object-cnn"), 3: ("object-cnn", "resnet18")}
STUDENT_HELP = (
    "the stolen model's architecture (empty: the suspect's own; auto: another one made for "
    "the suspect's inputs)"
)


@dataclasses.dataclass(frozen=True)
class RetrainingParams(ExtractionParams):
    student: str = param("", STUDENT_HELP)


@dataclasses.dataclass(frozen=True)
class CrossRetrainingParams(ExtractionParams):
    student: str = param(AUTO, STUDENT_HELP)


def student_name(requested: str, arch: Architecture) -> str:
    """The architecture to train: the requested one, the suspect's own, or ``auto``'s pick."""
    if requested and requested != AUTO:
        return requested
    if not requested:
        return arch.name
    for name in CROSS_CANDIDATES.get(arch.in_shape[0], CROSS_CANDIDATES[3]):
        if name != arch.name and name in MODELS:
            return name
    raise ConfigError(f"--student auto: no other architecture for {arch.in_shape} inputs")


def transfer_size(data: AttackerData) -> int:
    """Images the transfer set will offer the suspect (without marking any as used), cut
    to the budget's ``--queries``: what ``planned_steps`` counts before anything runs."""
    n = len(data.unlabeled_x) if data.has_unlabeled else len(data.labeled_x)
    return min(n, data.budget.queries) if data.budget.queries > 0 else n


def check_transfer_budget(label: str, budget: AttackerBudget) -> None:
    """A thief needs images to ask about: refuse a budget with none, before anything runs."""
    if not budget.unlabeled and budget.data_fraction == 0:
        raise ConfigError(
            f"{label} queries the suspect on the attacker's images: give --unlabeled SOURCE "
            "or --data-fraction > 0"
        )


def check_student(student: str) -> None:
    if student and student != AUTO:
        check_model_name(student)


def stolen_info(student: str, answered: int, data: AttackerData, **more: Any) -> dict[str, Any]:
    """What every extraction attack reports: the student, the answers it learnt from."""
    return {"student": student, "queries": answered, "answers": data.budget.answers, **more}


class Retraining(Attack[RetrainingParams | CrossRetrainingParams]):
    """Extraction: a fresh model trained on the suspect's answers to the attacker's images."""

    label = "retraining"
    #: whether the point is another architecture (a warning when it is the suspect's own)
    cross = False

    def __init__(self, params: RetrainingParams | CrossRetrainingParams) -> None:
        super().__init__(params)
        check_student(params.student)

    def check_budget(self, budget: AttackerBudget) -> None:
        check_transfer_budget(self.label, budget)

    def planned_steps(self, data: AttackerData) -> int:
        return data.total_steps(transfer_size(data), self.params.batch)

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        x, targets = ask_transfer_set(model, data, env)
        name = student_name(p.student, arch)
        student, student_arch = fresh_model(arch, name, data.seed, env.device)
        if self.cross and student_arch.name == arch.name:
            env.log(f"cross-retraining with the suspect's own {arch.name}: this is retraining")
        report = train_student(student, x, targets, p, data, env)
        info = stolen_info(student_arch.name, len(x), data, loss=report.loss)
        return AttackResult(student, student_arch, report.steps, info)


def train_student(
    student: nn.Module,
    x: torch.Tensor,
    targets: torch.Tensor,
    p: ExtractionParams,
    data: AttackerData,
    env: AttackEnv,
) -> TrainReport:
    """The one loop on ``(x, targets)`` for the budget's epochs: the soft-label
    cross-entropy of WRT's ``ModelExtraction.CELoss``, which the loop computes for float
    targets."""
    source = Source("transfer", x, p.batch, y=targets)
    return env.train(student, [source], p.settings(), steps=data.total_steps(len(x), p.batch))


register_attack("retraining", RetrainingParams, family=EXTRACTION)(Retraining)


@register_attack("cross-retraining", CrossRetrainingParams, family=EXTRACTION)
class CrossRetraining(Retraining):
    """Extraction: retraining into another architecture than the suspect's.

    WRT's config trains a DenseNet against its ResNet; ``--student auto`` picks here."""

    label = "cross-retraining"
    cross = True
