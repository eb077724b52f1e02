"""``weight-shifting``: the SoK's own attack. Every conv and linear weight is shifted against
its mean filter and noised, then the model is fine-tuned back to accuracy.

Lukas et al., "SoK: How Robust is Image Classification Deep Neural Network Watermarking?",
IEEE S&P 2022 (Section V); WRT ``wrt/attacks/removal/weight_shifting.py`` and
``configs/cifar10/attack_configs/weight_shifting.yaml`` (λ 1.5, 10 epochs, watermark accuracy
logged every 200 batches; ``weight_shifting1.yaml``: λ 2.5). For a weight tensor ``W`` whose
first axis indexes the output units (a conv's filters, a linear layer's rows), WRT sets::

    W <- W - λ · mean_0(W) - λ₂ · N(0, std(W)²)

``mean_0(W)``, the mean filter, is subtracted ``λ`` times from every filter, and Gaussian noise
of ``λ₂`` (1.0) times the tensor's own standard deviation is added, one draw per entry. So the
deterministic part of each filter's change is exactly ``λ · mean_0(W)``, whose norm over the
layer is ``λ · ‖mean_0(W)‖ · sqrt(out_units)``. WRT picks layers by the parameter's name
("conv" in it); we pick every ``nn.Conv2d`` and ``nn.Linear`` by type, as the SoK's text says
(every convolution and dense layer), so a model's naming cannot hide a layer. Biases are left
alone, as in WRT. The fine-tune that follows runs the budget's epochs (default 10, WRT's) on
the attacker's images labelled by the suspect; WRT's every-200-batches check is the
referee's ``--eval-every`` here.

The fine-tune's rate is 0.01, not the owner's 0.05 the other SoK fine-tunes start from: on
fashion-mnist (LeNet-5 marked by ``pattern``, 89.6% test accuracy, 20% of the training set for
the attacker, 1880 steps) 0.05 never recovered from the shift (10.0%, chance) while 0.01 came
back to 78.7% with the key at 2.5%.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.registry import MODIFICATION, AttackEnv, AttackResult, register_attack
from engine.attacks.sok_tuning import SoKTuneAttack, SoKTuneParams
from engine.models import Architecture
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class WeightShiftingParams(SoKTuneParams):
    lr: float = param(
        0.01,
        "learning rate (0.05 left a shifted LeNet-5 at chance)",
        low=0.0,
        high=100.0,
        low_open=True,
    )
    lmbda: float = param(
        1.5,
        "times the mean filter subtracted from every filter (WRT lambda: 1.5)",
        low=0.0,
        high=100.0,
    )
    lmbda2: float = param(
        1.0, "noise, in standard deviations of each layer (WRT lambda2: 1.0)", low=0.0, high=100.0
    )


def shifted_layers(model: nn.Module) -> list[nn.Module]:
    """Every convolution and dense layer, by module type, in definition order."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


@torch.no_grad()
def shift_weights(
    model: nn.Module, lmbda: float, lmbda2: float, generator: torch.Generator | None = None
) -> list[dict[str, float]]:
    """Shift and noise every conv/linear weight in place (the step before fine-tuning).

    Returns per layer the norm of the deterministic shift ``λ · mean_0(W)`` over the whole
    tensor and the standard deviation the noise was drawn with, ``λ₂ · std(W)``.
    """
    changes = []
    for layer in shifted_layers(model):
        w = layer.weight
        mean_filter = w.mean(0, keepdim=True)
        scale = float(w.std()) if w.numel() > 1 else 0.0
        noise = torch.randn(w.shape, generator=generator, device="cpu", dtype=torch.float32)
        shift = lmbda * mean_filter.expand_as(w)
        w.sub_(shift + (lmbda2 * scale) * noise.to(device=w.device, dtype=w.dtype))
        changes.append({"shift_norm": float(shift.norm()), "noise_std": lmbda2 * scale})
    return changes


@register_attack("weight-shifting", WeightShiftingParams, family=MODIFICATION)
class WeightShifting(SoKTuneAttack[WeightShiftingParams]):
    """The SoK's attack: shift filters by 1.5 x their mean, add noise, fine-tune 10 epochs."""

    label = "weight-shifting"

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        source = self.source(model, data, env.queries)  # labelled by the unshifted suspect
        generator = torch.Generator().manual_seed(data.seed)
        changes = shift_weights(model, p.lmbda, p.lmbda2, generator)
        env.log(
            f"shifted {len(changes)} conv/linear layers (lambda {p.lmbda}, noise {p.lmbda2} sd)"
        )
        report = env.train(model, [source], p.settings(), steps=self.planned_steps(data))
        info = {"layers": len(changes), "labels": p.labels, "loss": report.loss}
        return AttackResult(model, arch, report.steps, info)
