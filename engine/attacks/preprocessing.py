"""The SoK's input-preprocessing attacks: serve the stolen model behind an input transform.

Lukas et al. (S&P 2022, Section V and Table II) measure JPEG compression, Gaussian, mean and
median smoothing, input noising, quantisation, flipping, feature squeezing and input
reconstruction (WRT ``wrt/attacks/removal/`` and ``configs/cifar10/attack_configs/``). None
changes a weight: the attacker deploys the model behind a transform that every query passes
through, the owner's verification queries included. Each transform is one module of
:mod:`engine.transforms` with its source and defaults; this module makes each fixed transform
an attack of the preprocessing family whose flags are the transform's params
(``wmtui attack --attack jpeg --quality 80``). The learnt one, input reconstruction, trains
its autoencoder first: :mod:`engine.attacks.input_reconstruction`.

The result is a :class:`~engine.deploy.Deployed` model: its run folder holds the classifier
unchanged plus ``deploy.json``, and attacking a deployed run again appends to the list.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import nn

from engine.attacks.budget import AttackerData
from engine.attacks.input_reconstruction import (
    InputReconstructionAttack,
    ReconstructionAttackParams,
)
from engine.attacks.registry import (
    PREPROCESSING,
    Attack,
    AttackEnv,
    AttackResult,
    register_attack,
)
from engine.deploy import Deployed
from engine.models import Architecture
from engine.transforms import TRANSFORMS, make_transform

#: the fixed transforms, in the order listings show them (the issue's and the SoK's)
FIXED = (
    "jpeg",
    "gaussian-smoothing",
    "mean-smoothing",
    "median-smoothing",
    "input-noising",
    "input-quantization",
    "input-flipping",
    "feature-squeezing",
)


class Preprocess(Attack[Any]):
    """Deploy the suspect behind one transform; no data, no training, no queries."""

    transform: ClassVar[str] = ""

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        transform = make_transform(self.transform, self.params).resolved(env.seed)
        deployed = Deployed.wrap(model, [transform])
        env.log(f"served behind {deployed.describe()}")
        return AttackResult(deployed, arch, 0, {"deployed": deployed.spec()})


def register_preprocessing(name: str) -> type[Preprocess]:
    """The attack ``name`` deploying the transform ``name``, with the transform's params as
    its flags and its one-line summary as the attack's."""
    plugin = TRANSFORMS.get(name)
    assert plugin.params is not None
    attack = type(
        "Preprocess" + "".join(part.title() for part in name.split("-")),
        (Preprocess,),
        {"transform": name, "__doc__": plugin.summary, "__module__": __name__},
    )
    register_attack(name, plugin.params, family=PREPROCESSING)(attack)
    return attack


ATTACK_CLASSES = {name: register_preprocessing(name) for name in FIXED}
register_attack("input-reconstruction", ReconstructionAttackParams, family=PREPROCESSING)(
    InputReconstructionAttack
)
