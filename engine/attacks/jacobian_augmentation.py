"""``jacobian-augmentation``: Papernot et al.'s substitute training on synthetic queries.

Papernot, McDaniel, Goodfellow, Jha, Celik and Swami, "Practical Black-Box Attacks against
Machine Learning" (AsiaCCS 2017), Algorithm 1. The thief starts from a small seed set (the
paper's 150 images, 10-15 per class, here the first ``--seed-size`` images of the
attacker's data, whose true labels stay unused), has the victim answer it, and trains a
substitute. Between two of the ``--rounds`` substitute epochs (the paper's rho = 6) every
point x of the set gains a twin ``clip(x + lambda_r * sign(dF_sub(x)[victim label]/dx),
0, 1)``: a step towards where the substitute's output for the victim's label changes most,
i.e. towards the victim's decision boundaries. The victim answers the twins (one query
each), so the set, and the queries, double every round. ``lambda_r = lambda * (-1) **
floor(r / tau)`` is the paper's periodic step size (lambda 0.1, tau 3). The substitute
trains ``--epochs`` passes over the set each round (the budget's default 10 is the
paper's), SGD at lr 0.01 with momentum 0.9 as in the paper; the gradient is taken on the
substitute's logits. The budget's ``--queries`` cap stops augmentation: the substitute
learns from what was answered and ``info["stopped"]`` says why.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engine import stopping
from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import EXTRACTION, Attack, AttackEnv, AttackResult, register_attack
from engine.attacks.stealing import (
    ExtractionParams,
    QueryBudgetSpent,
    ask_within_budget,
    counted_victim,
    fresh_model,
)
from engine.data.base import as_float
from engine.errors import ConfigError
from engine.models import Architecture, check_model_name
from engine.registry import param
from engine.training import Source


@dataclasses.dataclass(frozen=True)
class JacobianParams(ExtractionParams):
    student: str = param("", "substitute architecture (empty: the suspect's own)")
    seed_size: int = param(150, "images of the attacker's data the seed set holds", low=1)
    rounds: int = param(
        6, "substitute epochs (rho); the set doubles between two of them", low=1, high=20
    )
    lam: float = param(
        0.1,
        "step of each augmentation (lambda), in [0, 1] pixel units",
        low=0.0,
        high=1.0,
        low_open=True,
    )
    tau: int = param(3, "rounds between two sign flips of the step (periodic step size)", low=1)
    lr: float = param(0.01, "initial learning rate", low=0.0, high=100.0, low_open=True)
    batch: int = param(100, "answered images per step", low=1, high=65_536)
    schedule: str = param(
        "constant", "learning-rate schedule", choices=("constant", "step", "cosine")
    )


def step_size(lam: float, tau: int, round_index: int) -> float:
    """The paper's periodic step: ``lambda`` for tau rounds, then ``-lambda`` for tau..."""
    return lam * (-1) ** (round_index // tau)


def augment(
    substitute: nn.Module, x: torch.Tensor, labels: torch.Tensor, lam: float, chunk: int = 512
) -> torch.Tensor:
    """``x + lam * sign(d substitute(x)[label] / dx)`` for float images ``x``, before the
    caller clips to [0, 1]: every pixel moves by exactly ``|lam|`` (none where the gradient
    is zero)."""
    was_training = substitute.training
    substitute.eval()
    parts = []
    for start in range(0, len(x), chunk):
        stopping.check()
        batch = x[start : start + chunk].detach().clone().requires_grad_(True)
        chosen = substitute(batch).gather(1, labels[start : start + chunk].view(-1, 1))
        (grad,) = torch.autograd.grad(chosen.sum(), batch)
        parts.append(batch.detach() + lam * grad.sign())
    substitute.train(was_training)
    return torch.cat(parts) if parts else x.clone()


@register_attack("jacobian-augmentation", JacobianParams, family=EXTRACTION)
class JacobianAugmentation(Attack[JacobianParams]):
    """Papernot et al.'s substitute: a small seed set, doubled each round by Jacobian-based
    synthetic points the victim labels."""

    def __init__(self, params: JacobianParams) -> None:
        super().__init__(params)
        if params.student:
            check_model_name(params.student)

    def check_budget(self, budget: AttackerBudget) -> None:
        if budget.data_fraction == 0 and not budget.unlabeled:
            raise ConfigError(
                "jacobian-augmentation needs seed images to query the suspect with: give "
                "--data-fraction > 0 or --unlabeled SOURCE"
            )

    def seed_count(self, data: AttackerData) -> int:
        pool = len(data.unlabeled_x) if data.has_unlabeled else len(data.labeled_x)
        return min(self.params.seed_size, pool)

    def planned_steps(self, data: AttackerData) -> int:
        """Every round's training as if no cap cut the doubling."""
        n, cap = self.seed_count(data), data.budget.queries
        total = 0
        for _ in range(self.params.rounds):
            total += data.total_steps(n, self.params.batch)
            n = min(2 * n, cap) if cap else 2 * n
        return total

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        answers = data.budget.answers
        before = env.queries.count  # a chain's earlier steps share the counter
        teacher = counted_victim(model, env)
        seed = as_float(data.transfer_images(self.seed_count(data)))
        x, y = ask_within_budget(teacher, seed, env, answers)
        substitute, sub_arch = fresh_model(arch, p.student, data.seed, env.device)
        per_round, stopped, steps, loss = [env.queries.count - before], "", 0, float("nan")
        trained = 0
        for r in range(p.rounds):
            report = env.train(
                substitute,
                [Source("substitute", x, p.batch, y=y)],
                p.settings(),
                steps=data.total_steps(len(x), p.batch),
            )
            steps, loss, trained = steps + report.steps, report.loss, trained + 1
            if stopped or r == p.rounds - 1:
                break
            twins = augment(substitute, x, y.argmax(1), step_size(p.lam, p.tau, r)).clamp(0, 1)
            try:
                new_x, new_y = ask_within_budget(teacher, twins, env, answers)
            except QueryBudgetSpent as exc:
                stopped = str(exc)
                env.log(f"jacobian-augmentation: {exc}; the substitute keeps {len(x)} points")
                break
            if len(new_x) < len(twins):
                stopped = (
                    f"query budget spent: {env.queries.count} of {env.queries.cap} answers "
                    f"given, {len(twins) - len(new_x)} synthetic points left unasked"
                )
            x, y = torch.cat([x, new_x]), torch.cat([y, new_y])
            per_round.append(env.queries.count - before)
        info: dict[str, object] = {
            "student": sub_arch.name,
            "queries": env.queries.count - before,
            "answers": answers,
            "queries_per_round": per_round,
            "rounds": trained,
            "points": len(x),
            "seed_images": len(seed),
            "loss": loss,
        }
        if stopped:
            info["stopped"] = stopped
        return AttackResult(substitute, sub_arch, steps, info)
