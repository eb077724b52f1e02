"""An ensemble of k models of one architecture, served as one classifier.

WRT's ensemble attack (``wrt/attacks/removal/ensemble.py``) leaves a list of stolen models
whose predictions are averaged. A run folder holds one model whose architecture record
(``model.json``) must rebuild it before its weights load, and that record is a name, an input
shape and a class count; so the ensemble is named after what it holds,
``ensemble-<k>-<member>`` (``ensemble-3-lenet5``), and :func:`engine.models.build_model`
rebuilds k members of the named architecture from that name alone. The weights stay one
safetensors file (``members.<i>.<member's own keys>``): nothing new on disk, nothing unpickled.

The output is ``log(mean_i softmax(member_i(x)))``: logits whose softmax is exactly the
members' averaged probabilities, so the referee's argmax, a thief's softmax and a later
attack's gradients all see the averaged model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ConfigError

PREFIX = "ensemble-"
#: the most members a name may ask for (a typo of 300 would build 300 models)
MAX_MEMBERS = 64


def ensemble_name(member: str, k: int) -> str:
    """The architecture record's name of ``k`` models of architecture ``member``."""
    return f"{PREFIX}{k}-{member}"


def is_ensemble_name(name: str) -> bool:
    return name.startswith(PREFIX)


def parse_ensemble_name(name: str) -> tuple[int, str]:
    """``(k, member)`` from ``ensemble-<k>-<member>``; anything else is one clear line."""
    count, _, member = name[len(PREFIX) :].partition("-")
    if not count.isdigit() or not member or not 1 <= int(count) <= MAX_MEMBERS:
        raise ConfigError(
            f"model {name!r}: an ensemble is named ensemble-K-MODEL with K in 1..{MAX_MEMBERS}"
        )
    return int(count), member


class Ensemble(nn.Module):
    """The members' averaged softmax, as logits (see the module docstring)."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logs = torch.stack([F.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(logs, dim=0) - math.log(len(self.members))


def build_ensemble(
    name: str, in_shape: tuple[int, int, int], num_classes: int, build: Callable[..., Any]
) -> Ensemble:
    """k fresh members of the named architecture; ``build(name, in_shape, classes)`` makes
    one (the registry's, passed in so this module needs no import of the package)."""
    k, member = parse_ensemble_name(name)
    return Ensemble([build(member, in_shape, num_classes) for _ in range(k)])
