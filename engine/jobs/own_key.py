"""The attacker's own watermark, embedded into a model it holds: what ``piracy`` and
``overwriting`` share.

Both attacks draw a fresh key of one of our schemes, with that scheme's own default
parameters, from the attacker's images (never the owner's key), and train the suspect on its
share of the data mixed with the key's batches through the one training loop. They differ in
what they are for: a pirate claims the model with its key (Li et al.), an overwriter wants the
owner's key gone and its own merely in place (the SoK's "overwriting", Lukas et al. 2022).
The referee verifies the attacker's key after the attack either way (``AttackResult.claims``).

A ``dual`` key is signed with a throwaway key pair that lives only while the key is drawn:
its private half never reaches the output folder.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import AttackEnv, AttackResult
from engine.data.base import ImageSet
from engine.data.meta import DatasetMeta
from engine.errors import ConfigError
from engine.jobs.embed import widen_outputs
from engine.models import Architecture
from engine.registry import parse_params
from engine.training import Diverged, OptimSettings, Source
from engine.watermarks import SCHEMES, Key, KeyContext, get_scheme, parse_scheme_params
from engine.watermarks.base import generator
from engine.watermarks.claims import create_key_pair
from engine.watermarks.triggers import random_words
from engine.watermarks.white_box import is_white_box

#: the schemes an attacker can embed from its own images with default parameters
OWN_SCHEMES = ("dual", "pattern", "abstract", "newlabel", "unrelated")
#: the white-box schemes registered (``overwriting`` writes over a white-box mark with one)
WHITE_BOX_SCHEMES = tuple(p.name for p in SCHEMES if is_white_box(p.factory))
#: what separates the attacker's key seed from the owner's: the budget's seed defaults to the
#: run's, and a key drawn from it could be the owner's own (its uchida signature and projection,
#: its noise trigger or target), which a pirate would then claim and an overwriter reinforce
SEED_OFFSET = 7_919
#: the pattern scheme's default word, which an attacker does not reuse
DEFAULT_WORD = "TEST"
#: a throwaway key pair: 2048 bits (it only has to sign one claim, now)
THROWAWAY_BITS = 2048


def check_own_scheme(scheme: str, data: DatasetMeta, budget: AttackerBudget, who: str) -> None:
    """The attacker's scheme, with the defaults it is embedded with, on the attacker's share
    of the training images (what its keygen will be handed), refused before anything runs."""
    share = dataclasses.replace(data, train_size=round(budget.data_fraction * data.train_size))
    try:
        get_scheme(scheme).check_data(parse_params(get_scheme(scheme).Params, {}), share)
    except ConfigError as exc:
        raise ConfigError(f"{who} {scheme} key on its {share.train_size:,} images: {exc}") from None


def own_seed(seed: int) -> int:
    """The attacker's key seed: its budget seed, moved off the owner's key stream."""
    return seed + SEED_OFFSET


def own_choices(scheme: str, seed: int, num_classes: int) -> dict[str, Any]:
    """What an attacker picks for itself rather than taking the scheme's defaults: a scheme's
    default target (and a pattern's default TEST word) is the owner's key when the owner kept
    the defaults, and training it again would reinforce the mark it should overwrite. So the
    target is drawn from the attacker's seed (it does not know the owner's, and may hit it by
    chance, 1 in the number of classes) and a pattern's word is drawn too."""
    chosen: dict[str, Any] = {}
    factory = get_scheme(scheme)
    if factory.target_field is not None:
        draw = torch.randint(0, num_classes, (1,), generator=generator(seed, "own-target"))
        chosen[factory.target_field] = int(draw)
    if factory.trigger_field == "trigger":
        chosen["text"] = random_words(1, len(DEFAULT_WORD), seed, exclude=DEFAULT_WORD)[0]
    return chosen


@dataclasses.dataclass(frozen=True)
class OwnKeyEmbedding:
    """How the attacker embeds its key: the scheme, the identifier a ``dual`` claim signs,
    the optimiser and the batch; ``name`` names its probes, its info keys and its log lines
    ("pirate": ``pirate_scheme``, probes ``pirate...``)."""

    scheme: str
    owner: str
    settings: OptimSettings
    batch: int
    name: str

    def draw_key(self, own: ImageSet, arch: Architecture, seed: int, env: AttackEnv) -> Key:
        """A fresh key of the scheme from the attacker's images (a dual one signed with a
        throwaway key pair, deleted before this returns)."""
        scheme = get_scheme(self.scheme)
        with tempfile.TemporaryDirectory(prefix=f"wmtui-{self.name}-") as folder:
            values = own_choices(self.scheme, seed, len(own.classes))
            if self.scheme == "dual":
                keys = create_key_pair(Path(folder) / "keys", bits=THROWAWAY_BITS)
                values |= {"owner": self.owner, "signing_key": str(keys)}
            params = parse_scheme_params(self.scheme, values)
            return scheme.keygen(params, KeyContext(own, arch.name, seed, log=env.log))

    def run(
        self,
        model: nn.Module,
        arch: Architecture,
        data: AttackerData,
        env: AttackEnv,
        *,
        steps: int,
        labels: torch.Tensor | None = None,
    ) -> AttackResult:
        """Draw the key, train ``steps`` steps on the attacker's images (with ``labels``, the
        true ones by default) plus the key's batches; the key is the result's claim. A run
        that diverges keeps the loop's last evaluated model and still claims."""
        y = data.labeled_y if labels is None else labels
        data.used.add("labeled" if labels is None else "labeled-images")
        own = ImageSet(
            "attacker's share",
            data.labeled_x,
            y,
            data.labeled_x,
            y,
            classes=[str(c) for c in range(data.num_classes)],
        )
        key = self.draw_key(own, arch, own_seed(data.seed), env)
        env.log(f"the {self.name}'s key: {key.describe()}")
        if key.num_outputs > arch.num_classes:
            # a new-label key needs an output the suspect lacks: the attacker widens the head,
            # keeping every trained row, as an owner's embedding from a clean model does
            arch = dataclasses.replace(arch, num_classes=key.num_outputs)
            model = widen_outputs(model, arch)
        scheme = get_scheme(self.scheme)
        sources = (
            [data.labeled_source(self.batch)]
            if labels is None
            else [Source(f"{self.name}-labelled", data.labeled_x, self.batch, y=labels)]
        )
        sources += scheme.training_sources(key, self.batch, env.device, own)
        env.track(scheme.probes(key, own, self.name))
        info: dict[str, Any] = {
            f"{self.name}_scheme": self.scheme,
            f"{self.name}_key": key.describe(),
        }
        try:
            report = env.train(model, sources, self.settings, steps=steps)
        except Diverged as diverged:
            # the attacker's numbers blew up: a model trained on would be destroyed, so it
            # keeps the model of the loop's last evaluation (put back) and claims anyway
            env.log(f"the {self.name}'s training diverged: {diverged}")
            return AttackResult(
                model, arch, diverged.step, info | {"diverged_at": diverged.step}, claims=[key]
            )
        return AttackResult(model, arch, report.steps, info | {"loss": report.loss}, claims=[key])
