"""``strip-evasion``: serve the stolen model behind STRIP, so the owner's key queries are
spotted and answered wrongly.

Evasion (Hitaj et al., "Evasion Attacks Against Watermarking Techniques found in MLaaS
Systems", SNAMS 2019; Namba & Sakuma, "Robust Watermarking of Neural Network with Exponential
Weighting", AsiaCCS 2019, "query modification") leaves the weights alone: the thief answers
honest users honestly and the verifier wrongly, which works whenever the key can be told from
ordinary queries. A trigger-set key is a backdoor, and STRIP (Gao et al., ACSAC 2019) detects
backdoor inputs without ever seeing one: :mod:`engine.filters.strip`.

The attacker's clean images (the labelled fraction's, labels unused, else ``--unlabeled``) are
shuffled with the attacker's seed and split three ways, disjoint: ``n`` blending images the
filter keeps, ``calibration`` images whose entropies set the threshold at their ``fpr``
quantile (the attacker has no triggered images, so only the false-positive rate can be
chosen: the paper's way), and ``held_out`` images on which the false-positive rate is measured
again, as honest users would meet it. The referee then verifies the owner's key through the
filter and measures clean test accuracy through it: ``retention`` (verification collapse),
``test_acc`` (what honest users keep) and ``info.fpr_held_out`` are the three numbers the
issue asks for. No training; the thief runs STRIP on its own copy, so the entropy passes are
measurements like pruning's activations, counted as images, not queries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import EVASION, Attack, AttackEnv, AttackResult, register_attack
from engine.data.base import as_float
from engine.deploy import Deployed
from engine.errors import ConfigError
from engine.filters import make_filter
from engine.filters.strip import ANSWERS, BLENDS, Strip
from engine.models import Architecture
from engine.registry import param

#: clean images per entropy pass of the calibration (each costs ``n`` blends)
BATCH = 512


@dataclasses.dataclass(frozen=True)
class StripEvasionParams:
    n: int = param(64, "clean images each query is superimposed on (STRIP's N)", low=1, high=4096)
    alpha: float = param(0.5, "weight of the query in each blend", low=0.0, high=1.0, low_open=True)
    blend: str = param(
        "mix",
        "superimposition: alpha*x + (1-alpha)*clean (TrojanZoo), or x + clean clipped (STRIP)",
        choices=BLENDS,
    )
    fpr: float = param(
        0.05,
        "false-positive rate on the attacker's clean images that sets the threshold",
        low=0.0,
        high=1.0,
        high_open=True,
    )
    answer: str = param(
        "random",
        "a flagged query's answer: a random other class (Hitaj et al.), or the second-best",
        choices=ANSWERS,
    )
    calibration: int = param(
        2000, "attacker's clean images whose entropies set the threshold", low=1, high=1_000_000
    )
    held_out: int = param(
        2000,
        "further clean images the false-positive rate is measured on (0: none)",
        low=0,
        high=1_000_000,
    )


@torch.no_grad()
def served_entropies(served: Deployed, strip: Strip, images: torch.Tensor) -> torch.Tensor:
    """STRIP's entropy of uint8 ``images`` as the served model sees them (after its input
    transforms): ``[N]`` on the CPU."""
    out = []
    for start in range(0, len(images), BATCH):
        x = as_float(images[start : start + BATCH])
        for transform in served.transforms:
            x = transform(x)
        out.append(strip.entropy(x, served.inner).cpu())
    return torch.cat(out) if out else torch.zeros(0)


@register_attack("strip-evasion", StripEvasionParams, family=EVASION)
class StripEvasion(Attack[StripEvasionParams]):
    """Serve the model behind STRIP: queries with low blend entropy get a wrong answer."""

    def check_budget(self, budget: AttackerBudget) -> None:
        if budget.data_fraction == 0 and not budget.unlabeled:
            raise ConfigError(
                "strip-evasion calibrates on the attacker's clean images: give "
                "--data-fraction > 0 or --unlabeled"
            )

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        images = data.clean_images()
        blend, calibration, held_out = self._split(images, env.seed)
        channels, height, width = images.shape[1:]
        strip = make_filter(
            "strip",
            {
                "n": p.n,
                "alpha": p.alpha,
                "blend": p.blend,
                "answer": p.answer,
                "seed": env.seed % (2**31 - 1),
                "channels": channels,
                "height": height,
                "width": width,
            },
        )
        assert isinstance(strip, Strip)
        strip.clean.copy_(blend.cpu())
        served = Deployed.wrap(model, filters=[strip])
        clean = served_entropies(served, strip, calibration)
        threshold = float(torch.quantile(clean.double(), p.fpr))
        strip.threshold.fill_(threshold)
        held = served_entropies(served, strip, held_out)
        fpr = float((held < threshold).double().mean()) if len(held) else None
        measured = f"{fpr:.1%}" if fpr is not None else "not measured"
        env.log(
            f"served behind {served.describe()}: threshold {threshold:.4f} bits "
            f"(set for {p.fpr:.1%} of {len(calibration)} clean images); false positives on "
            f"{len(held)} held-out clean images {measured}"
        )
        info: dict[str, Any] = {
            "filters": served.filter_spec(),
            "threshold": threshold,
            "fpr_set": p.fpr,
            "fpr_held_out": fpr,
            "calibration_images": len(calibration),
            "held_out_images": len(held),
            "blend_images": len(blend),
            "clean_entropy_median": float(clean.median()),
        }
        return AttackResult(served, arch, 0, info)

    def _split(
        self, images: torch.Tensor, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Blending, calibration and held-out images: disjoint, shuffled by ``seed``; the two
        last shrink (held-out to half of what remains first) when the attacker has fewer."""
        p = self.params
        available = len(images) - p.n
        if available < 2:
            raise ConfigError(
                f"strip-evasion needs at least n + 2 = {p.n + 2} clean images, "
                f"the attacker has {len(images)}: lower --n or give more data"
            )
        held = min(p.held_out, available // 2)
        calibration = min(p.calibration, available - held)
        gen = torch.Generator().manual_seed(seed * 7_919 + 1)
        order = torch.randperm(len(images), generator=gen).to(images.device)
        cut = (p.n, p.n + calibration, p.n + calibration + held)
        return (
            images[order[: cut[0]]],
            images[order[cut[0] : cut[1]]],
            images[order[cut[1] : cut[2]]],
        )
