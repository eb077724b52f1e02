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
import); it registers with the attacks as a removal-role attack.
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import AttackEnv, AttackResult, LabelledAttack, register_attack
from engine.data.base import ImageSet
from engine.data.meta import DatasetMeta
from engine.errors import ConfigError
from engine.models import Architecture
from engine.registry import param, parse_params
from engine.training import Diverged, OptimSettings
from engine.watermarks import KeyContext, get_scheme, parse_scheme_params
from engine.watermarks.claims import create_key_pair

#: a pirate's throwaway key pair: 2048 bits (it only has to sign one claim, now)
PIRATE_BITS = 2048


@dataclasses.dataclass(frozen=True)
class PiracyParams:
    scheme: str = param(
        "dual",
        "the pirate's watermark scheme (its own key, default parameters)",
        choices=("dual", "pattern", "abstract", "newlabel", "unrelated"),
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


@register_attack("piracy", PiracyParams)
class Piracy(LabelledAttack[PiracyParams]):
    """Embed the attacker's own watermark into the owner's model and claim it."""

    label = "piracy"

    def check_data(
        self, data: DatasetMeta, budget: AttackerBudget, given: Mapping[str, Any] | None = None
    ) -> None:
        """The pirate's scheme, with the defaults it is embedded with, on the pirate's share
        of the training images: what its keygen will be handed."""
        scheme = get_scheme(self.params.scheme)
        share = dataclasses.replace(data, train_size=round(budget.data_fraction * data.train_size))
        try:
            scheme.check_data(parse_params(scheme.Params, {}), share)
        except ConfigError as exc:
            raise ConfigError(
                f"piracy: the pirate's {self.params.scheme} key on its {share.train_size:,} "
                f"images: {exc}"
            ) from None

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        own = ImageSet(
            "attacker's share",
            data.labeled_x,
            data.labeled_y,
            data.labeled_x,
            data.labeled_y,
            classes=[str(c) for c in range(data.num_classes)],
        )
        with tempfile.TemporaryDirectory(prefix="wmtui-pirate-") as folder:
            values: dict[str, Any] = {}
            if p.scheme == "dual":
                keys = create_key_pair(Path(folder) / "keys", bits=PIRATE_BITS)
                values = {"owner": p.owner, "signing_key": str(keys)}
            params = parse_scheme_params(p.scheme, values)
            scheme = get_scheme(p.scheme)
            key = scheme.keygen(params, KeyContext(own, arch.name, data.seed, log=env.log))
        env.log(f"the pirate's key: {key.describe()}")
        sources = [data.labeled_source(p.batch)]
        sources += scheme.training_sources(key, p.batch, env.device, own)
        env.track(scheme.probes(key, own, "pirate"))
        settings = OptimSettings(optimizer=p.optimizer, lr=p.lr, clip_grad=p.clip_grad)
        info: dict[str, Any] = {"pirate_scheme": p.scheme, "pirate_key": key.describe()}
        try:
            report = env.train(model, sources, settings, steps=self.planned_steps(data))
        except Diverged as diverged:
            # the pirate's numbers blew up: a model trained on would be destroyed, so the
            # pirate keeps the model of the loop's last evaluation (put back) and claims anyway
            env.log(f"the pirate's training diverged: {diverged}")
            return AttackResult(
                model, arch, diverged.step, info | {"diverged_at": diverged.step}, claims=[key]
            )
        return AttackResult(model, arch, report.steps, info | {"loss": report.loss}, claims=[key])
