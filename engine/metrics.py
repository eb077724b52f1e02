"""Measurements the engine takes as referee: accuracy on test data and on key sets."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from engine.data.base import as_float

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class Probe:
    """A labelled set the referee scores: the test set, or a key set (retention).

    ``transform`` stamps a trigger onto float images; ``classes`` limits the argmax to the
    first K outputs (new-label models report normal accuracy over the original classes).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    transform: Transform | None = None
    classes: int | None = None


def prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 batch -> model input, in the memory format the model was moved to."""
    out = as_float(x)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


@torch.no_grad()
def accuracy(model: nn.Module, probe: Probe, *, batch_size: int = 1024, amp: bool = False) -> float:
    """Fraction of ``probe`` classified as labelled; one host sync at the end."""
    n = len(probe.x)
    if n == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    channels_last = amp
    correct = torch.zeros((), dtype=torch.long, device=probe.x.device)
    try:
        for start in range(0, n, batch_size):
            x = prepare(probe.x[start : start + batch_size], channels_last)
            if probe.transform is not None:
                x = probe.transform(x)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            if probe.classes is not None:
                logits = logits[:, : probe.classes]
            correct += (logits.argmax(1) == probe.y[start : start + batch_size]).sum()
    finally:
        model.train(was_training)
    return correct.item() / n
