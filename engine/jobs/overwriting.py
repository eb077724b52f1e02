"""``overwriting``: embed a fresh watermark of one's own over the owner's (the SoK's
"overwriting" removal attack; Lukas et al., "SoK: How Robust is Image Classification Deep
Neural Network Watermarking?", IEEE S&P 2022; WRT ``wrt/attacks/removal/overwriting.py``).

The attacker draws a fresh key of any of our schemes (``--scheme``; the scheme's own default
parameters, so its key size is the scheme's default as WRT's ``embed`` takes it from the
scheme's config) from its own images and trains the suspect on those images mixed with the
key's batches, hoping the new mark crowds out the old. As in WRT, the images are labelled by
the suspect itself by default (``--labels predicted``: WRT's ``remove`` replaces the given
labels with the classifier's predictions before embedding), so the attack needs images but no
ground truth; ``--labels true`` uses the attacker's labels instead. WRT runs the scheme's own
embedding schedule and ships no overwriting config of its own (``configs/cifar10/
attack_configs`` has none), so the length here is the attacker's budget (``--epochs`` /
``--steps``) and the optimiser piracy's (Adam, 0.001, batch 128), which keeps a trained model's
accuracy where WRT's embedding rate of 0.1 would not.

WRT overwrites with the owner's own scheme (the attacker knows the algorithm, not the key);
our attack is never told the owner's scheme, so pass the same ``--scheme`` to reproduce that.
The point of the attack is the owner's key accuracy afterwards (the referee's retention);
the attacker's own key is verified like a pirate's claim (``claims``, ``OUT/pirate-key``).
``piracy`` is the claim-making special case; both embed through :mod:`engine.jobs.own_key`.

A white-box scheme (``uchida``: a signature in a layer's weights) can overwrite too, as the
SoK overwrites Uchida with Uchida: the attacker's own projection and signature regularise the
same layer, and the referee reads the owner's bit error rate after it (``after.white_box``).
The attacker's key is drawn from a seed of its own (:func:`engine.jobs.own_key.own_seed`),
never from the owner's: the budget's seed defaults to the run's, and a key drawn from it would
be the owner's own signature and projection for ``uchida`` (or the owner's noise trigger),
which the attack would then reinforce rather than overwrite.

A job-layer plugin (it needs the watermark schemes, which attack modules never import).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import (
    MODIFICATION,
    AttackEnv,
    AttackResult,
    LabelledAttack,
    register_attack,
)
from engine.data.meta import DatasetMeta
from engine.jobs.own_key import OWN_SCHEMES, WHITE_BOX_SCHEMES, check_own_scheme
from engine.jobs.piracy import PiracyParams
from engine.metrics import predictions
from engine.models import Architecture
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class OverwritingParams(PiracyParams):
    scheme: str = param(
        "pattern",
        "the attacker's scheme: a fresh key, the scheme's defaults (WRT: the owner's scheme)",
        choices=(*OWN_SCHEMES, *WHITE_BOX_SCHEMES),
    )
    owner: str = param("attacker", "the identifier an attacker's dual claim signs")
    labels: str = param(
        "predicted",
        "labels of the attacker's images: the suspect's predictions (WRT) or the true ones",
        choices=("predicted", "true"),
    )


@register_attack("overwriting", OverwritingParams, family=MODIFICATION)
class Overwriting(LabelledAttack[OverwritingParams]):
    """Overwrite the owner's watermark with a fresh one of any scheme."""

    label = "overwriting"

    def check_data(
        self, data: DatasetMeta, budget: AttackerBudget, given: Mapping[str, Any] | None = None
    ) -> None:
        check_own_scheme(self.params.scheme, data, budget, "overwriting: the attacker's")

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        labels = None
        if p.labels == "predicted":
            # the suspect labels the attacker's images once, before any of them is trained on
            labels = predictions(model, data.labeled_x, classes=data.num_classes)
            env.queries.add(len(data.labeled_x))
        embedding = p.embedding("attacker")
        result = embedding.run(
            model, arch, data, env, steps=self.planned_steps(data), labels=labels
        )
        result.info["labels"] = p.labels
        return result
