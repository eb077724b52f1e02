"""``knockoff``: Knockoff Nets, stealing a model with a transfer set from another distribution.

Orekondy et al., "Knockoff Nets: Stealing Functionality of Black-Box Models" (CVPR 2019);
WRT ``wrt/attacks/removal/knockoff_nets.py`` with ``configs/cifar10/attack_configs/
knockoff.yaml`` (SGD, lr 0.1, momentum 0.9, weight decay 5e-4, batch 64: the shared
:class:`ExtractionParams` defaults). The thief holds no data of the victim's task: the
transfer set is the budget's ``--unlabeled`` source (another dataset, ``folder:PATH``,
``synthetic`` or ``noise``), the victim answers it, and a fresh student (``--student``,
default the suspect's architecture) learns from the answers.

``--sampling random`` (the paper's and WRT's only implemented strategy) asks about the whole
transfer set. ``--sampling adaptive`` is the paper's reinforcement-learning strategy: a
gradient bandit (Sutton and Barto, Section 2.8) over coarse groups of the transfer set picks,
query by query, the group to draw the next image from, rewarded by the victim's answer
(certainty: the top-two margin; diversity: how far the answer exceeds the recent mean
answer; loss: the student's cross-entropy against the answer; ``all``: their sum, the
paper's default). The paper's groups are the transfer set's own classes; ours carry no
labels, so the groups are a seeded k-means of the images (8x8 average-pooled pixels): it
costs no query, where grouping by the victim's predictions would spend some. The student
is trained a pass over each round's answers as it goes (the loss reward needs it), then on
all of them.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
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

REWARDS = ("cert", "div", "loss", "all")


@dataclasses.dataclass(frozen=True)
class KnockoffParams(ExtractionParams):
    student: str = param("", "student architecture (empty: the suspect's own)")
    sampling: str = param(
        "random",
        "random: ask about the whole transfer set; adaptive: a bandit picks which images to ask",
        choices=("random", "adaptive"),
    )
    picks: int = param(
        0, "images adaptive sampling has the suspect answer (0: half the transfer set)", low=0
    )
    groups: int = param(
        10,
        "k-means groups of the transfer set the adaptive policy chooses among",
        low=2,
        high=1000,
    )
    reward: str = param("all", "adaptive sampling's reward", choices=REWARDS)
    policy_lr: float = param(
        0.1,
        "step size of the adaptive policy's gradient-bandit update",
        low=0.0,
        high=100.0,
        low_open=True,
    )
    round_size: int = param(
        500, "images the adaptive policy picks between two updates of the student", low=1
    )


# -- the bandit --------------------------------------------------------------------------------
class GradientBandit:
    """Preferences ``H`` over groups, policy ``softmax(H)``; each reward moves the chosen
    group's preference by ``lr * (r - mean reward so far) * (1 - pi)`` and every other
    group's by ``-lr * (r - mean) * pi`` (Knockoff Nets, Section 4.1.2)."""

    def __init__(self, groups: int, lr: float) -> None:
        self.prefs = torch.zeros(groups, dtype=torch.float64)
        self.lr = lr
        self.baseline = 0.0
        self.seen = 0

    def policy(self, available: torch.Tensor | None = None) -> torch.Tensor:
        """The probability of each group; groups with nothing left to draw get none."""
        prefs = self.prefs
        if available is not None:
            prefs = prefs.masked_fill(~available, float("-inf"))
        return torch.softmax(prefs, dim=0)

    def draw(self, available: torch.Tensor, gen: torch.Generator) -> int:
        return int(torch.multinomial(self.policy(available), 1, generator=gen))

    def update(self, action: int, reward: float) -> None:
        pi = self.policy()
        advantage = reward - self.baseline
        step = -self.lr * advantage * pi
        step[action] = self.lr * advantage * (1.0 - pi[action])
        self.prefs += step
        self.seen += 1
        self.baseline += (reward - self.baseline) / self.seen


def kmeans_groups(x: torch.Tensor, k: int, seed: int, iterations: int = 10) -> torch.Tensor:
    """``[N]`` group of each uint8 image: seeded Lloyd iterations on 8x8 pooled pixels."""
    feats = F.adaptive_avg_pool2d(as_float(x).float(), (8, 8)).flatten(1)
    k = min(k, len(feats))
    gen = torch.Generator().manual_seed(seed)
    centres = feats[torch.randperm(len(feats), generator=gen)[:k].to(feats.device)].clone()
    assign = torch.zeros(len(feats), dtype=torch.long, device=feats.device)
    for _ in range(iterations):
        stopping.check()
        assign = torch.cdist(feats, centres).argmin(1)
        for g in range(k):
            members = feats[assign == g]
            if len(members):  # an empty group keeps its centre
                centres[g] = members.mean(0)
    return assign


def rewards(
    answers: torch.Tensor, student_logits: torch.Tensor, recent: torch.Tensor | None, kind: str
) -> torch.Tensor:
    """``[n]`` rewards in the paper's three kinds, each in [0, 1] so ``all`` weighs them
    alike: the answer's top-two margin, its excess over the recent mean answer, and the
    student's cross-entropy against it over ``log(classes)``."""
    top = answers.topk(min(2, answers.shape[1]), dim=1).values
    cert = top[:, 0] - (top[:, 1] if top.shape[1] > 1 else 0.0)
    mean = recent if recent is not None else torch.zeros_like(answers[0])
    div = (answers - mean).clamp(min=0).sum(1).clamp(max=1.0)
    loss = -(answers * F.log_softmax(student_logits.float(), dim=1)).sum(1)
    loss = (loss / math.log(max(2, answers.shape[1]))).clamp(0.0, 1.0)
    parts = {"cert": cert, "div": div, "loss": loss}
    return sum(parts.values()) if kind == "all" else parts[kind]  # type: ignore[return-value]


# -- the attack --------------------------------------------------------------------------------
@register_attack("knockoff", KnockoffParams, family=EXTRACTION)
class Knockoff(Attack[KnockoffParams]):
    """Knockoff Nets: a fresh student learns the suspect from its answers to images of
    another distribution, asked at random or picked by a bandit."""

    def __init__(self, params: KnockoffParams) -> None:
        super().__init__(params)
        if params.student:
            check_model_name(params.student)

    def check_budget(self, budget: AttackerBudget) -> None:
        if not budget.unlabeled:
            raise ConfigError(
                "knockoff asks the suspect about images of another distribution: give "
                "--unlabeled SOURCE (a dataset, folder:PATH, synthetic or noise)"
            )

    def target(self, pool: int) -> int:
        """How many images the attack asks about: all of them at random, else ``--picks``
        (half the pool by default), never more than the pool."""
        if self.params.sampling == "random":
            return pool
        return max(1, min(pool, self.params.picks or pool // 2))

    def planned_steps(self, data: AttackerData) -> int:
        p = self.params
        n = self.target(len(data.unlabeled_x))
        steps = data.total_steps(n, p.batch)
        if p.sampling == "adaptive":
            full, last = divmod(n, p.round_size)
            steps += full * math.ceil(p.round_size / p.batch) + math.ceil(last / p.batch)
        return steps

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        before = env.queries.count  # a chain's earlier steps share the counter
        pool = data.transfer_images()
        student, student_arch = fresh_model(arch, p.student, data.seed, env.device)
        info: dict[str, object] = {
            "student": student_arch.name,
            "sampling": p.sampling,
            "answers": data.budget.answers,
            "transfer": data.unlabeled_name,
            "transfer_images": len(pool),
        }
        steps = 0
        if p.sampling == "random":
            x, y = ask_within_budget(model, pool, env, data.budget.answers)
            info["rounds"] = 1
        else:
            x, y, steps = self.adaptive(model, student, pool, data, env, info)
        report = env.train(
            student,
            [Source("transfer", x, p.batch, y=y)],
            p.settings(),
            steps=data.total_steps(len(x), p.batch),
        )
        info |= {"queries": env.queries.count - before, "answered": len(x), "loss": report.loss}
        return AttackResult(student, student_arch, steps + report.steps, info)

    def adaptive(
        self,
        victim: nn.Module,
        student: nn.Module,
        pool: torch.Tensor,
        data: AttackerData,
        env: AttackEnv,
        info: dict[str, object],
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Rounds of bandit picks, each answered, rewarded and learnt from; the budget's cap
        ends them early and the student learns from what was answered."""
        p = self.params
        teacher = counted_victim(victim, env)
        groups = kmeans_groups(pool, p.groups, data.seed)
        k = int(groups.max()) + 1
        gen = torch.Generator().manual_seed(data.seed * 7919 + 3)
        queues = [
            torch.nonzero(groups == g)
            .flatten()
            .cpu()[torch.randperm(int((groups == g).sum()), generator=gen)]
            .tolist()
            for g in range(k)
        ]
        bandit = GradientBandit(k, p.policy_lr)
        draws = [0] * k
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        recent: torch.Tensor | None = None
        target, asked, rounds, steps = self.target(len(pool)), 0, 0, 0
        while asked < target:
            stopping.check()  # a Stop lands between rounds too, not only in training
            picks, actions = [], []
            for _ in range(min(p.round_size, target - asked)):
                available = torch.tensor([bool(q) for q in queues])
                if not available.any():
                    break
                g = bandit.draw(available, gen)
                picks.append(queues[g].pop())
                actions.append(g)
            if not picks:
                break
            batch = pool[torch.tensor(picks, device=pool.device)]
            try:
                x, y = ask_within_budget(teacher, batch, env, data.budget.answers)
            except QueryBudgetSpent as exc:
                info["stopped"] = str(exc)
                env.log(f"knockoff: {exc}; training on the {asked} answers so far")
                break
            with torch.no_grad():
                student.eval()
                logits = student(as_float(x))
            gains = rewards(y, logits, recent, p.reward).tolist()
            for action, reward in zip(actions, gains, strict=False):  # the answered ones
                bandit.update(action, reward)
                draws[action] += 1
            recent = y.mean(0)
            xs.append(x)
            ys.append(y)
            asked += len(x)
            rounds += 1
            steps += env.train(
                student,
                [Source("transfer", x, p.batch, y=y)],
                p.settings(),
                steps=math.ceil(len(x) / p.batch),
            ).steps
            if len(x) < len(batch):
                info["stopped"] = f"query budget spent after {env.queries.count} answers"
                break
        if not xs:
            raise QueryBudgetSpent(env.queries.cap, env.queries.count, 1)
        info |= {
            "rounds": rounds,
            "groups": k,
            "group_draws": draws,
            "policy": [round(v, 4) for v in bandit.policy().tolist()],
        }
        return torch.cat(xs), torch.cat(ys), steps
