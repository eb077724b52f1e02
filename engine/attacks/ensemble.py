"""``ensemble``: several models stolen on disjoint parts of the transfer set, averaged.

WRT ``wrt/attacks/removal/ensemble.py`` (``EnsembleAttack``) with
``configs/cifar10/attack_configs/ensemble.yaml``: the transfer set, labelled by the suspect
(``true_labels: False``), is split into ``splits: 3`` non-overlapping parts; one fresh model
of the surrogate architecture (the suspect's own here, ``--student`` to change it) is trained
per part for the budget's epochs, on answers smoothed with ``epsilon: 0.2``
(``(1 − ε)·answer + ε/K``, WRT's trainer's label smoothing); the thief serves the members'
averaged softmax. Each member saw a third of the answers, so a watermark must be carried by
every part to survive the vote. The optimiser is WRT's retraining one
(:class:`~engine.attacks.stealing.ExtractionParams`).

The stolen model is an :class:`~engine.models.ensemble.Ensemble`, saved as one run model
named ``ensemble-<k>-<member>`` (the smallest record that rebuilds it: see that module).
Every image is asked once, within ``--queries``; the split is a seeded permutation, so a
class-sorted transfer set still gives every member every class.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import EXTRACTION, Attack, AttackEnv, AttackResult, register_attack
from engine.attacks.retraining import (
    check_student,
    check_transfer_budget,
    stolen_info,
    student_name,
    train_student,
    transfer_size,
)
from engine.attacks.stealing import ExtractionParams, ask_transfer_set, fresh_model
from engine.errors import ConfigError
from engine.models import Architecture
from engine.models.ensemble import MAX_MEMBERS, Ensemble, ensemble_name
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class EnsembleParams(ExtractionParams):
    student: str = param("", "the members' architecture (empty: the suspect's own)")
    splits: int = param(
        3,
        "members, each trained on its own part of the transfer set (WRT: 3)",
        low=2,
        high=MAX_MEMBERS,
    )
    epsilon: float = param(
        0.2,
        "label smoothing of the answers: (1 - eps) * answer + eps / classes (WRT: 0.2)",
        low=0.0,
        high=1.0,
    )


def part_sizes(n: int, k: int) -> list[int]:
    """Sizes of ``k`` near-equal parts of ``n`` images (``torch.tensor_split``'s)."""
    return [len(p) for p in torch.arange(n).tensor_split(k)]


@register_attack("ensemble", EnsembleParams, family=EXTRACTION)
class EnsembleAttack(Attack[EnsembleParams]):
    """Extraction: models stolen on disjoint parts of the transfer set, served averaged.

    Their softmax outputs are averaged (WRT's ensemble attack)."""

    def __init__(self, params: EnsembleParams) -> None:
        super().__init__(params)
        check_student(params.student)

    def check_budget(self, budget: AttackerBudget) -> None:
        check_transfer_budget("ensemble", budget)
        if 0 < budget.queries < self.params.splits:
            raise ConfigError(
                f"ensemble: --queries {budget.queries} cannot give each of "
                f"{self.params.splits} members an answer"
            )

    def planned_steps(self, data: AttackerData) -> int:
        sizes = part_sizes(transfer_size(data), self.params.splits)
        return sum(data.total_steps(max(1, size), self.params.batch) for size in sizes)

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        x, answers = ask_transfer_set(model, data, env)
        if len(x) < p.splits:
            raise ConfigError(
                f"ensemble: {len(x)} answered images cannot be split among {p.splits} members"
            )
        targets = (1.0 - p.epsilon) * answers + p.epsilon / answers.shape[1]
        gen = torch.Generator().manual_seed(data.seed * 7919 + 29)
        order = torch.randperm(len(x), generator=gen).to(x.device)
        name = student_name(p.student, arch)
        members, steps, losses = [], 0, []
        for i, part in enumerate(order.tensor_split(p.splits)):
            env.log(f"ensemble member {i + 1}/{p.splits}: {len(part)} answered images")
            member, _ = fresh_model(arch, name, data.seed + i, env.device)
            report = train_student(member, x[part], targets[part], p, data, env)
            members.append(member)
            steps += report.steps
            losses.append(report.loss)
        stolen = Ensemble(members)
        stolen_arch = Architecture(ensemble_name(name, p.splits), arch.in_shape, arch.num_classes)
        info = stolen_info(stolen_arch.name, len(x), data, member=name, losses=losses)
        return AttackResult(stolen, stolen_arch, steps, info)
