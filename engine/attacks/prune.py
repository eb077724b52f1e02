"""``prune``: magnitude (unstructured) and neuron (structured) pruning, and the masks that
fine-pruning keeps in place while it fine-tunes.

Pruning is in place: pruned weights are set to zero, so the saved model is a plain state
dict of the same architecture. ``neuron`` ranks units (conv channels, hidden linear units)
by their mean ReLU activation over the attacker's clean images and zeroes the least active
ones with their bias and following BatchNorm entries (Liu et al., 2018: backdoor neurons stay
dormant on clean data).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.common import last_layer, summed_outputs
from engine.attacks.registry import Attack, AttackEnv, AttackResult, register_attack
from engine.errors import ConfigError
from engine.metrics import percent
from engine.models import Architecture
from engine.registry import param

Masks = dict[nn.Parameter, torch.Tensor]


@dataclasses.dataclass(frozen=True)
class PruneParams:
    method: str = param(
        "magnitude",
        "magnitude: smallest |weights|; neuron: least active units on clean data",
        choices=("magnitude", "neuron"),
    )
    ratio: float = param(
        0.5,
        "fraction of weights (magnitude) or units (neuron) to zero",
        low=0.0,
        high=1.0,
        high_open=True,
    )
    scope: str = param(
        "global",
        "magnitude: one threshold over all layers, or the ratio in every layer",
        choices=("global", "layer"),
    )
    layers: str = param(
        "last",
        "neuron: the last conv layer (Liu et al.), or every conv and hidden layer",
        choices=("last", "all"),
    )
    samples: int = param(
        2000,
        "neuron: clean images whose mean activations rank the units",
        low=1,
        high=1_000_000,
    )


def prunable(model: nn.Module) -> list[nn.Module]:
    """Conv and linear layers, in definition order: what pruning addresses."""
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def sparsity(model: nn.Module) -> float:
    """Fraction of conv/linear weights that are exactly zero."""
    weights = [m.weight for m in prunable(model)]
    zeros = sum(int((w == 0).sum()) for w in weights)
    return zeros / max(1, sum(w.numel() for w in weights))


def _smallest(values: torch.Tensor, ratio: float) -> torch.Tensor:
    """Boolean mask of the round(ratio * n) smallest entries (exact count, ties by order)."""
    k = round(ratio * values.numel())
    mask = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    if k:
        mask[torch.argsort(values.flatten(), stable=True)[:k]] = True
    return mask.view_as(values)


def magnitude_masks(model: nn.Module, ratio: float, scope: str = "global") -> Masks:
    """Keep-masks zeroing the smallest-magnitude weights: over all layers, or per layer."""
    layers = prunable(model)
    if scope == "layer":
        return {m.weight: ~_smallest(m.weight.detach().abs(), ratio) for m in layers}
    flat = torch.cat([m.weight.detach().abs().flatten() for m in layers])
    pruned = _smallest(flat, ratio)
    masks, start = {}, 0
    for m in layers:
        n = m.weight.numel()
        masks[m.weight] = ~pruned[start : start + n].view_as(m.weight)
        start += n
    return masks


def _following_batchnorm(model: nn.Module, layer: nn.Module) -> nn.Module | None:
    """The BatchNorm right after ``layer`` in definition order, if it normalises its units."""
    modules = list(model.modules())
    i = next(j for j, m in enumerate(modules) if m is layer)
    nxt = modules[i + 1] if i + 1 < len(modules) else None
    units = layer.weight.shape[0]
    if isinstance(nxt, nn.BatchNorm1d | nn.BatchNorm2d) and nxt.num_features == units:
        return nxt
    return None


def mean_activations(
    model: nn.Module, layers: list[nn.Module], images: torch.Tensor, chunk: int = 512
) -> list[torch.Tensor]:
    """Mean ReLU activation of every unit of ``layers`` over ``images`` (uint8)."""

    def per_unit(out: torch.Tensor) -> torch.Tensor:
        act = torch.relu(out)
        return act.flatten(2).mean(2) if act.dim() > 2 else act  # conv: over its feature map

    sums = summed_outputs(model, layers, images, per_unit, chunk=chunk)
    return [s / max(1, len(images)) for s in sums]


def neuron_masks(
    model: nn.Module, images: torch.Tensor, ratio: float, layers: str = "last"
) -> tuple[Masks, int, int]:
    """Keep-masks zeroing the least active units; returns (masks, units pruned, units seen)."""
    convs = [m for m in prunable(model) if isinstance(m, nn.Conv2d)]
    if layers == "last":
        if not convs:
            raise ConfigError("neuron pruning of the last conv layer: the model has none")
        targets = [convs[-1]]
    else:
        head = last_layer(model)
        targets = [m for m in prunable(model) if m is not head]
    activations = mean_activations(model, targets, images)
    masks: Masks = {}
    pruned = total = 0
    for layer, act in zip(targets, activations, strict=True):
        dead = _smallest(act, ratio)
        pruned += int(dead.sum())
        total += len(act)
        keep = ~dead
        shape = (-1,) + (1,) * (layer.weight.dim() - 1)
        masks[layer.weight] = keep.view(shape).expand_as(layer.weight).clone()
        if layer.bias is not None:
            masks[layer.bias] = keep.clone()
        bn = _following_batchnorm(model, layer)
        if bn is not None and bn.affine:
            masks[bn.weight] = keep.clone()
            masks[bn.bias] = keep.clone()
    return masks, pruned, total


@torch.no_grad()
def apply_masks(masks: Masks) -> None:
    for p, keep in masks.items():
        p.mul_(keep.to(p.dtype))


@contextlib.contextmanager
def masks_held(masks: Masks) -> Iterator[None]:
    """Keep pruned entries at zero through fine-tuning, by zeroing their gradients.

    With zero gradient SGD's momentum buffer and weight decay (of a zero weight) stay zero, and
    Adam's update is zero, so the loop needs no post-step hook.
    """
    handles = [p.register_hook(lambda g, k=keep: g * k.to(g.dtype)) for p, keep in masks.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def prune_model(
    model: nn.Module, data: AttackerData, p: PruneParams
) -> tuple[Masks, dict[str, float]]:
    """Compute and apply the masks ``p`` asks for; report what was removed."""
    if p.method == "magnitude":
        masks = magnitude_masks(model, p.ratio, p.scope)
        apply_masks(masks)
        return masks, {"sparsity": sparsity(model)}
    images = data.clean_images()[: p.samples]
    masks, pruned, total = neuron_masks(model, images, p.ratio, p.layers)
    apply_masks(masks)
    return masks, {
        "sparsity": sparsity(model),
        "units_pruned": pruned,
        "unit_fraction": pruned / max(1, total),
    }


def pruned_text(info: dict[str, float]) -> str:
    """What pruning removed, for the log: "sparsity 60.00%, 12 units (9.38%)", not a dict."""
    text = f"sparsity {percent(info.get('sparsity'))}"
    if "units_pruned" in info:
        text += f", {int(info['units_pruned'])} units ({percent(info.get('unit_fraction'))})"
    return text


@register_attack("prune", PruneParams)
class Prune(Attack[PruneParams]):
    """Magnitude or neuron pruning at --ratio (use --sweep for an accuracy/retention table)."""

    def check_budget(self, budget: AttackerBudget) -> None:
        if self.params.method == "neuron" and budget.data_fraction == 0 and not budget.unlabeled:
            raise ConfigError(
                "prune --method neuron ranks units on clean data: give --data-fraction > 0 "
                "or --unlabeled"
            )

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        _, info = prune_model(model, data, self.params)
        env.log(f"pruned ({self.params.method}, ratio {self.params.ratio}): {pruned_text(info)}")
        return AttackResult(model, arch, 0, {"method": self.params.method, **info})
