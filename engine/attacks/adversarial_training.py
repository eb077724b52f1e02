"""``adversarial-training``: fine-tune on the attacker's images mixed with PGD adversarial
examples of them.

Lukas et al., "SoK: How Robust is Image Classification Deep Neural Network Watermarking?",
IEEE S&P 2022; WRT ``wrt/attacks/removal/adversarial_training.py`` and
``configs/cifar10/attack_configs/adversarial_training.yaml``: untargeted L∞ PGD (Madry et
al., 2018) at ε 0.01, 0.1 and 0.25 in [0, 1] pixel units, step 0.01, 40 iterations, no random
start (ART's default), against the model's own prediction (ART's ``y=None``); 1000 examples
per ε each epoch (``n_max``) added to the attacker's images, 5 epochs. Adversarial examples
near the triggers' decision regions pull those regions back to the true class.

WRT regenerates its 3 x 1000 examples before every epoch and trains one pass over clean plus
adversarial images. We craft them per batch against the current model instead: every step
holds the clean and adversarial images in WRT's proportion (``samples`` per ε against the
attacker's images), the adversarial part split evenly over the ε values, so the one training
loop runs it with a batch transform and no epoch-wise regeneration. PGD runs with the model
in eval mode (BatchNorm statistics untouched) and outside autocast. It costs ``iterations``
forward and backward passes per adversarial image: lower it on a CPU. Epochs are the
budget's (WRT: 5, ``--epochs 5``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.registry import MODIFICATION, AttackEnv, AttackResult, register_attack
from engine.attacks.sok_tuning import SoKTuneAttack, SoKTuneParams
from engine.errors import ConfigError
from engine.models import Architecture
from engine.registry import param
from engine.training import Source


def parse_eps(text: str) -> tuple[float, ...]:
    """``"0.01,0.1,0.25"`` -> the ε values, each in (0, 1]; one clear line otherwise."""
    values = []
    for part in str(text).split(","):
        try:
            value = float(part)
        except ValueError:
            raise ConfigError(
                f"eps: expected numbers separated by commas, got {part.strip()!r}"
            ) from None
        if not math.isfinite(value) or not 0.0 < value <= 1.0:
            raise ConfigError(f"eps: every value must be in (0, 1], got {part.strip()}")
        values.append(value)
    return tuple(values)


@dataclasses.dataclass(frozen=True)
class AdversarialTrainingParams(SoKTuneParams):
    eps: str = param(
        "0.01,0.1,0.25", "PGD L-inf radii in [0,1] pixels, comma-separated (WRT's three)"
    )
    eps_step: float = param(0.01, "PGD step size (WRT: 0.01)", low=0.0, high=1.0, low_open=True)
    iterations: int = param(40, "PGD iterations per example (WRT: 40)", low=1, high=10_000)
    samples: int = param(
        1000,
        "adversarial examples per epsilon per epoch: their share of each batch (WRT: 1000)",
        low=1,
        high=10_000_000,
    )

    def __post_init__(self) -> None:
        parse_eps(self.eps)

    @property
    def radii(self) -> tuple[float, ...]:
        return parse_eps(self.eps)


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor,
    step: float,
    iterations: int,
) -> torch.Tensor:
    """Untargeted L∞ PGD from ``x`` (no random start) away from the model's own prediction,
    within ``eps`` (a scalar or one radius per image) and [0, 1]."""
    was_training = model.training
    model.eval()
    x = x.detach().float()
    radius = eps.to(x.device, x.dtype).view(-1, *([1] * (x.dim() - 1)))
    try:
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            with torch.no_grad():
                target = model(x).argmax(1)
            adv = x.clone()
            for _ in range(iterations):
                adv.requires_grad_(True)
                loss = F.cross_entropy(model(adv), target)
                (grad,) = torch.autograd.grad(loss, adv)
                adv = adv.detach() + step * grad.sign()
                adv = torch.minimum(torch.maximum(adv, x - radius), x + radius).clamp(0.0, 1.0)
    finally:
        model.train(was_training)
    return adv.detach()


def pgd_transform(
    model: nn.Module, radii: tuple[float, ...], step: float, iterations: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The batch transform: the adversarial part of a batch, its images split evenly (in
    order) over ``radii``."""

    def transform(x: torch.Tensor) -> torch.Tensor:
        per_image = torch.tensor(radii).repeat_interleave(math.ceil(len(x) / len(radii)))
        return pgd(model, x, per_image[: len(x)], step, iterations).to(x.dtype)

    return transform


def batch_split(batch: int, clean: int, adversarial: int) -> tuple[int, int]:
    """``(clean, adversarial)`` images per step in the proportion of the two pools."""
    adv = round(batch * adversarial / (clean + adversarial))
    adv = min(batch - 1, max(1, adv)) if batch > 1 else 1
    return max(batch - adv, 1), adv


@register_attack("adversarial-training", AdversarialTrainingParams, family=MODIFICATION)
class AdversarialTraining(SoKTuneAttack[AdversarialTrainingParams]):
    """Fine-tune on clean plus PGD images, eps 0.01/0.1/0.25, 40 iterations (WRT)."""

    label = "adversarial-training"

    def pools(self, data: AttackerData) -> tuple[int, int]:
        n = len(self.images(data))
        return n, len(self.params.radii) * min(self.params.samples, n)

    def planned_steps(self, data: AttackerData) -> int:
        clean, adversarial = self.pools(data)
        return data.total_steps(clean + adversarial, self.params.batch)

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        x, y = self.targets(model, data, env.queries)
        clean_n, adv_n = batch_split(p.batch, *self.pools(data))
        sources = [
            Source("attacker", x, clean_n, y=y),
            Source(
                "attacker-pgd",
                x,
                adv_n,
                y=y,
                transform=pgd_transform(model, p.radii, p.eps_step, p.iterations),
            ),
        ]
        env.log(f"each step: {clean_n} clean and {adv_n} PGD images (eps {p.eps})")
        report = env.train(model, sources, p.settings(), steps=self.planned_steps(data))
        info = {"eps": list(p.radii), "iterations": p.iterations, "labels": p.labels}
        return AttackResult(model, arch, report.steps, info | {"loss": report.loss})
