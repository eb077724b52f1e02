"""``piracy`` (Li et al. §4 and §7.2): the attacker embeds a watermark of its own into the
owner's model, then claims the model with it.

The pirate trains the model on its share of the owner's data (the budget: the paper gives it
5,000 images and 10 epochs) mixed with its own key's batches, from a key it made itself with
any scheme: by default a fresh ``dual`` claim signed with a fresh key pair that lives only for
the attack (its public claim goes into the summary and ``OUT/pirate-key``). The referee
streams the owner's retention (for a dual model: null and true accuracy) and test accuracy as
for every attack, and the pirate's accuracy on its own images; after the attack it verifies
the pirate's key on its own test data, and the summary says whether the pirate's claim holds.
Piracy resistance is "never both: test accuracy kept and the pirate verified".

This is a job-layer plugin (it needs the watermark schemes, which attack modules never
import); it registers with the attacks as a removal-role attack. The key embedding itself is
:mod:`engine.jobs.own_key`'s, shared with ``overwriting`` (which wants the owner's key gone
rather than a claim).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import AttackEnv, AttackResult, LabelledAttack, register_attack
from engine.data.meta import DatasetMeta
from engine.jobs.own_key import OWN_SCHEMES, OwnKeyEmbedding, check_own_scheme
from engine.models import Architecture
from engine.registry import param
from engine.training import OptimSettings


@dataclasses.dataclass(frozen=True)
class PiracyParams:
    scheme: str = param(
        "dual",
        "the pirate's watermark scheme (its own key, default parameters)",
        choices=OWN_SCHEMES,
    )
    owner: str = param("pirate", "the identifier a pirate dual claim signs")
    lr: float = param(
        0.001,
        "learning rate (the paper: the owner's last; Digit trains at 0.001)",
        low=0.0,
        high=100.0,
        low_open=True,
    )
    optimizer: str = param("adam", "optimizer", choices=("sgd", "adam"))
    batch: int = param(128, "the attacker's images per step (the paper: 128)", low=1)
    clip_grad: float = param(
        5.0, "gradient-norm clip (a dual pirate's +-lambda inputs need it; 0: off)", low=0.0
    )

    def embedding(self, name: str) -> OwnKeyEmbedding:
        """The attacker's key embedding these params describe, its probes named ``name``."""
        settings = OptimSettings(optimizer=self.optimizer, lr=self.lr, clip_grad=self.clip_grad)
        return OwnKeyEmbedding(self.scheme, self.owner, settings, self.batch, name)


@register_attack("piracy", PiracyParams)
class Piracy(LabelledAttack[PiracyParams]):
    """Embed the attacker's own watermark into the owner's model and claim it."""

    label = "piracy"

    def check_data(
        self, data: DatasetMeta, budget: AttackerBudget, given: Mapping[str, Any] | None = None
    ) -> None:
        check_own_scheme(self.params.scheme, data, budget, "piracy: the pirate's")

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        embedding = self.params.embedding("pirate")
        return embedding.run(model, arch, data, env, steps=self.planned_steps(data))
