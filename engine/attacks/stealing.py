"""What every extraction attack does: ask the suspect, within the budget, and train a new model.

The SoK's extraction family (Lukas et al., S&P 2022, Section IV-C; WRT
``wrt/attacks/removal/retraining.py``) learns the suspect's function from its answers alone.
A thief queries an API once per image and keeps the answers, so the transfer set is labelled
up front here (one query per image, counted and capped by ``env.queries``), not re-asked at
every epoch. ``--answers labels`` models an API that returns only a class: the student then
learns from one-hot targets, as WRT's ``use_logits=False``.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.common import TuneParams, frozen_copy
from engine.attacks.queries import QueryBudgetSpent
from engine.attacks.registry import AttackEnv
from engine.data.base import as_float
from engine.models import Architecture, build_model
from engine.registry import param

__all__ = [
    "ExtractionParams",
    "QueryBudgetSpent",
    "ask",
    "ask_transfer_set",
    "ask_within_budget",
    "counted_victim",
    "fresh_model",
]


@dataclasses.dataclass(frozen=True)
class ExtractionParams(TuneParams):
    """Training of a stolen model. Defaults follow WRT's retraining configs
    (``configs/cifar10/attack_configs/retraining.yaml``): SGD with momentum 0.9 and weight
    decay 5e-4, batch 64; epochs come from the budget. WRT decays the rate x0.2 at epochs 20,
    35 and 50 of 60 (MultiStepLR) with Nesterov momentum; the loop has neither, and a cosine
    decay over the same run stands for the steps.

    The rate departs from WRT's 0.1, which suits its BatchNorm ResNets: a LeNet-5 stolen from
    fashion-mnist at 0.1 fell to chance (loss 2.30 from step ~100) for the abstract and
    newlabel models of seed 0 and for smooth retraining of DAWN's API, while 0.05, the rate
    our owners train at, stole the abstract model at 84.8% (0.01: 76.8%, 3 epochs)."""

    lr: float = param(0.05, "initial learning rate", low=0.0, high=100.0, low_open=True)
    batch: int = param(64, "answered images per step", low=1, high=65_536)
    schedule: str = param(
        "cosine", "learning-rate schedule", choices=("constant", "step", "cosine")
    )


@torch.no_grad()
def ask(
    victim: nn.Module, x: torch.Tensor, env: AttackEnv, answers: str, batch: int = 1000
) -> torch.Tensor:
    """The suspect's answers to the uint8 images ``x``: float targets ``[N, outputs]``, its
    softmax probabilities, or the one-hot of its top class for ``answers == "labels"``.

    Every image is one query on ``env.queries``; a batch past the cap raises
    :class:`QueryBudgetSpent` before it is answered. ``victim`` is the suspect as served
    (a deployed model's transforms and answer filters apply, DAWN's and STRIP's included).
    """
    teacher = victim if _counted(victim) else frozen_copy(victim, env.queries)
    parts = []
    for start in range(0, len(x), batch):
        logits = teacher(as_float(x[start : start + batch])).float()
        if answers == "labels":
            parts.append(F.one_hot(logits.argmax(1), logits.shape[1]).float())
        else:
            parts.append(F.softmax(logits, dim=1))
    if not parts:
        return x.new_zeros((0, 0), dtype=torch.float32)
    return torch.cat(parts)


def _counted(model: nn.Module) -> bool:
    return bool(getattr(model, "_wmtui_counted", False))


def counted_victim(victim: nn.Module, env: AttackEnv) -> nn.Module:
    """One frozen, counted copy of the suspect for an attack that asks many times (rounds of
    Jacobian augmentation, adaptive sampling): copied once rather than once per round."""
    teacher = frozen_copy(victim, env.queries)
    teacher._wmtui_counted = True  # type: ignore[assignment]
    return teacher


def ask_within_budget(
    victim: nn.Module, x: torch.Tensor, env: AttackEnv, answers: str, batch: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images answered, targets)``: the first images of ``x`` the remaining budget allows,
    all of them without a cap. Logs when the budget cut the set."""
    remaining = env.queries.remaining
    if remaining is not None and remaining < len(x):
        env.log(
            f"query budget: {remaining} of {len(x)} images answered "
            f"({env.queries.count} of {env.queries.cap} spent before)"
        )
        x = x[:remaining]
    if len(x) == 0:
        raise QueryBudgetSpent(env.queries.cap, env.queries.count, 1)
    return x, ask(victim, x, env, answers, batch)


def ask_transfer_set(
    victim: nn.Module, data: AttackerData, env: AttackEnv
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attacker's transfer set answered within the budget, in the budget's kind of
    answers: the first images the remaining budget allows (the cost counts only those)."""
    images = data.transfer_images(env.queries.remaining)
    return ask_within_budget(victim, images, env, data.budget.answers)


def fresh_model(
    arch: Architecture, name: str, seed: int, device: torch.device
) -> tuple[nn.Module, Architecture]:
    """A new model of architecture ``name`` (empty: the suspect's own) for the suspect's
    inputs and outputs, initialised from ``seed`` without touching the global RNG stream."""
    student_arch = Architecture(name or arch.name, arch.in_shape, arch.num_classes)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(student_arch).to(device)
    return model, student_arch
