"""Pieces the fine-tuning attacks share: optimisation params, layer lookup, frozen teachers.

Everything here works *around* the one training loop rather than beside it: parameter
subsets go through ``TrainLoop(params=...)``, frozen parts through a wrapper module whose
``train()`` keeps them in eval mode, and pruning masks through gradient hooks, so no attack
needs a loop of its own.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Iterator

import torch
from torch import nn

from engine.attacks.queries import QueryCounter
from engine.data.base import as_float
from engine.errors import ConfigError
from engine.registry import param
from engine.training import OptimSettings


@dataclasses.dataclass(frozen=True)
class TuneParams:
    """Optimisation of a fine-tuning attack. Defaults follow Adi et al. (2018), whose setup
    REFIT reuses: SGD, momentum 0.9, weight decay 5e-4, batch 100."""

    lr: float = param(0.001, "initial learning rate", low=0.0, high=100.0, low_open=True)
    batch: int = param(100, "labelled images per step", low=1, high=65_536)
    optimizer: str = param("sgd", "optimizer", choices=("sgd", "adam"))
    momentum: float = param(0.9, "SGD momentum", low=0.0, high=1.0, high_open=True)
    weight_decay: float = param(5e-4, "L2 weight decay", low=0.0, high=1.0)
    schedule: str = param(
        "constant", "learning-rate schedule", choices=("constant", "step", "cosine")
    )
    step_size: int = param(500, "steps between decays for the 'step' schedule", low=1)
    gamma: float = param(
        0.9, "decay factor of the 'step' schedule", low=0.0, high=1.0, low_open=True
    )

    def settings(self) -> OptimSettings:
        return OptimSettings(
            optimizer=self.optimizer,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            step_size=self.step_size,
            gamma=self.gamma,
        )


def last_layer(model: nn.Module) -> nn.Module:
    """The output layer: ``model.classifier[-1]`` for our classifiers, else the last Linear."""
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Sequential) and len(head) and isinstance(head[-1], nn.Linear):
        return head[-1]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ConfigError(f"{type(model).__name__} has no linear output layer to fine-tune")
    return linears[-1]


def reinitialise(layer: nn.Module, seed: int) -> None:
    """Fresh weights for ``layer`` (RTLL/RTAL), reproducible from the attacker's seed."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        layer.reset_parameters()  # type: ignore[operator]
    finally:
        torch.random.set_rng_state(gen_state)


class HeadOnly(nn.Module):
    """The suspect model with everything but ``head`` frozen, for FTLL/RTLL.

    The loop calls ``train()`` on what it is given; this wrapper keeps the frozen part in
    eval mode so BatchNorm statistics (resnet18) do not drift: only the head changes.
    """

    def __init__(self, model: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.inner = model
        self.head = head

    def train(self, mode: bool = True) -> HeadOnly:
        super().train(mode)
        self.inner.eval()
        self.head.train(mode)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


@contextlib.contextmanager
def only_trainable(model: nn.Module, keep: nn.Module) -> Iterator[None]:
    """Turn off gradients outside ``keep`` for the duration (saves the backward pass)."""
    kept = {id(p) for p in keep.parameters()}
    changed = [p for p in model.parameters() if id(p) not in kept and p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


def frozen_copy(model: nn.Module, queries: QueryCounter | None = None) -> nn.Module:
    """A copy of the suspect model that labels data: eval mode, no gradients, never trained;
    with ``queries`` (``env.queries``) every image it answers for is counted as a query."""
    teacher = copy.deepcopy(model).eval()
    if queries is not None:
        queries.watch(teacher)
    for p in teacher.parameters():
        p.requires_grad_(False)
    if next(teacher.parameters()).is_cuda:  # the loop feeds channels_last batches on CUDA
        teacher.to(memory_format=torch.channels_last)
    return teacher


def pseudo_labeller(teacher: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``x -> argmax teacher(x)``: REFIT's annotation of unlabelled data by the suspect."""

    @torch.no_grad()
    def label(x: torch.Tensor) -> torch.Tensor:
        return teacher(x).argmax(1)

    return label


@torch.no_grad()
def summed_outputs(
    model: nn.Module,
    layers: list[nn.Module],
    images: torch.Tensor,
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda out: out,
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda x: x,
    chunk: int = 512,
) -> list[torch.Tensor]:
    """Per layer, the sum over ``images`` (uint8) of ``reduce(output)``, read by forward hooks
    in eval mode: what pruning (mean activations) and laundering (clean against stamped
    outputs) measure. ``prepare`` changes each float batch first (a trigger stamped on)."""
    sums: list[torch.Tensor | None] = [None] * len(layers)

    def hook(index: int) -> Callable[[nn.Module, object, torch.Tensor], None]:
        def record(_m: nn.Module, _inp: object, out: torch.Tensor) -> None:
            total = reduce(out.float()).sum(0)
            previous = sums[index]
            sums[index] = total if previous is None else previous + total

        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(layers)]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), chunk):
            model(prepare(as_float(images[start : start + chunk])))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [s if s is not None else torch.zeros(0) for s in sums]
