"""``weight-quantization``: every parameter tensor rounded to ``2^bits`` evenly spaced values,
then a short fine-tune.

The SoK's quantisation attack (Lukas et al., "SoK: How Robust is Image Classification Deep
Neural Network Watermarking?", IEEE S&P 2022; WRT ``wrt/attacks/removal/weight_quantization.py``
and ``configs/cifar10/attack_configs/weight_quantization.yaml``: 5 bits, one epoch of
fine-tuning; ``weight_quantization1.yaml``: 6 bits). Like WRT it quantises every parameter
tensor of the model on its own range (weights, biases, BatchNorm scales), one tensor at a
time. WRT maps each weight strictly inside one of the ``2^b - 1`` intervals of
``linspace(min, max, 2^b)`` to the interval's midpoint and leaves the two extremes alone;
we round to the nearest of the ``2^b`` grid points instead, the same worst-case error (half a
step) with exactly ``2^b`` possible values, so "b bits" holds literally.

Then WRT fine-tunes for one epoch on the attacker's images labelled by the suspect (the
weights leave the grid again; the attack measures whether the watermark comes back):
``tune_epochs`` (1) over the attacker's images, or ``--steps`` when the budget gives them;
``tune_epochs 0`` keeps the quantised model as it is.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import MODIFICATION, AttackEnv, AttackResult, register_attack
from engine.attacks.sok_tuning import SoKTuneAttack, SoKTuneParams
from engine.models import Architecture
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class WeightQuantizationParams(SoKTuneParams):
    bits: int = param(5, "bits per parameter: 2^bits values per tensor (WRT: 5)", low=1, high=16)
    tune_epochs: int = param(
        1, "fine-tuning epochs after quantising (WRT: 1; 0: none)", low=0, high=10_000
    )


@torch.no_grad()
def quantize_tensor(values: torch.Tensor, bits: int) -> torch.Tensor:
    """``values`` rounded to the nearest of ``2^bits`` points evenly spaced over its range."""
    low, high = values.min(), values.max()
    levels = 2**bits - 1
    if levels == 0 or high <= low:
        return values.clone()
    step = (high - low) / levels
    return low + torch.round((values - low) / step).clamp(0, levels) * step


@torch.no_grad()
def quantize_model(model: nn.Module, bits: int) -> int:
    """Quantise every floating-point parameter tensor in place; returns how many."""
    count = 0
    for p in model.parameters():
        if p.is_floating_point() and p.numel() > 0:
            p.copy_(quantize_tensor(p.float(), bits).to(p.dtype))
            count += 1
    return count


@register_attack("weight-quantization", WeightQuantizationParams, family=MODIFICATION)
class WeightQuantization(SoKTuneAttack[WeightQuantizationParams]):
    """Round every weight tensor to 2^bits levels (WRT: 5 bits), fine-tune one epoch."""

    label = "weight-quantization"

    def check_budget(self, budget: AttackerBudget) -> None:
        if self.params.tune_epochs > 0:
            super().check_budget(budget)

    def planned_steps(self, data: AttackerData) -> int:
        p = self.params
        if p.tune_epochs == 0:
            return 0
        if data.budget.steps > 0:
            return data.budget.steps
        return p.tune_epochs * max(1, -(-len(self.images(data)) // p.batch))

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        source = self.source(model, data, env.queries) if p.tune_epochs else None
        tensors = quantize_model(model, p.bits)
        env.log(f"quantised {tensors} parameter tensors to {2**p.bits} values each")
        info: dict[str, object] = {"bits": p.bits, "tensors": tensors, "labels": p.labels}
        if source is None:
            return AttackResult(model, arch, 0, info)
        report = env.train(model, [source], p.settings(), steps=self.planned_steps(data))
        return AttackResult(model, arch, report.steps, info | {"loss": report.loss})
