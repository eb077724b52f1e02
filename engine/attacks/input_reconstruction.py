"""``input-reconstruction``: serve the model behind a denoising autoencoder trained on the
attacker's images.

Source: WRT ``wrt/attacks/removal/input_reconstruction.py`` (the autoencoder of
``wrt/training/models/torch/autoencoder/imagenet_autoencoder.py``, 128 filters in
``configs/cifar10/attack_configs/input_reconstruction.yaml``, Adam at 0.01 and a mean squared
error as WRT's ``cifar_autoencoder`` compiles it, batch 64 as the config's loader). WRT loads
an autoencoder trained beforehand and has no training code (``train_autoencoder`` raises);
ours is trained here, by the one training loop: a denoising objective, the attacker's clean
images with Gaussian noise of ``--noise`` (our choice, 0.1: the SoK gives none) in, the clean
images out, for the budget's ``--epochs`` or ``--steps``. Labels are never used.

Registered by :mod:`engine.attacks.preprocessing`, after the fixed transforms (the order
listings show). The loop trains :class:`DenoisingTrainee`: in training mode it is the
autoencoder (its output compared by ``Source(loss="mse")`` with the clean batch), in
evaluation mode the deployed model (the referee's probes measure the served model's accuracy
and retention while it learns). The loop needed no change for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import Attack, AttackEnv, AttackResult
from engine.deploy import Deployed
from engine.errors import ConfigError
from engine.models import Architecture
from engine.registry import param
from engine.training import OptimSettings, Source
from engine.transforms import make_transform


@dataclasses.dataclass(frozen=True)
class ReconstructionAttackParams:
    filters: int = param(128, "feature maps of the autoencoder (WRT: 128)", low=1, high=1024)
    noise: float = param(
        0.1, "std of the noise it learns to remove, in [0,1] pixel units", low=0.0, high=10.0
    )
    lr: float = param(0.01, "Adam learning rate (WRT: 0.01)", low=0.0, high=100.0, low_open=True)
    batch: int = param(64, "images per step (WRT: 64)", low=1, high=65_536)


class DenoisingTrainee(nn.Module):
    """The autoencoder as the loop trains it (noisy image -> clean image) and the served model
    as the referee measures it; the classifier stays frozen in eval mode throughout."""

    def __init__(self, net: nn.Module, served: Deployed, noise: float, seed: int) -> None:
        super().__init__()
        self.net = net
        self.served = served
        self.noise = noise
        self.seed = seed
        self.draws = 0

    def train(self, mode: bool = True) -> DenoisingTrainee:
        super().train(mode)
        self.served.inner.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.served(x)
        generator = torch.Generator(device=x.device).manual_seed(self.seed * 7919 + self.draws)
        self.draws += 1
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return self.net((x + self.noise * noise).clamp(0, 1))


def clean_target(x: torch.Tensor) -> torch.Tensor:
    """The denoising target: the clean batch itself."""
    return x


class InputReconstructionAttack(Attack[ReconstructionAttackParams]):
    """Serve behind a denoising autoencoder, trained here."""

    def check_budget(self, budget: AttackerBudget) -> None:
        if budget.data_fraction == 0 and not budget.unlabeled:
            raise ConfigError(
                "input-reconstruction trains its autoencoder on the attacker's images: give "
                "--data-fraction > 0 or --unlabeled"
            )

    def planned_steps(self, data: AttackerData) -> int:
        images = data.labeled_x if data.has_labeled else data.unlabeled_x
        return data.total_steps(len(images), self.params.batch)

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        p = self.params
        images = data.clean_images()
        transform = make_transform(
            "input-reconstruction", {"filters": p.filters, "channels": images.shape[1]}
        )
        served = Deployed.wrap(model, [transform])
        frozen = [q for q in served.inner.parameters() if q.requires_grad]
        for q in frozen:
            q.requires_grad_(False)
        transform.net.requires_grad_(True)
        trainee = DenoisingTrainee(transform.net, served, p.noise, env.seed)
        source = Source("attacker-images", images, p.batch, label=clean_target, loss="mse")
        settings = OptimSettings(optimizer="adam", lr=p.lr, weight_decay=0.0)
        try:
            report = env.train(
                trainee,
                [source],
                settings,
                steps=self.planned_steps(data),
                params=transform.net.parameters(),
            )
        finally:
            for q in frozen:
                q.requires_grad_(True)
            transform.eval()
            transform.requires_grad_(False)
        env.log(f"served behind {served.describe()}, reconstruction loss {report.loss:.4g}")
        info: dict[str, Any] = {"deployed": served.spec(), "reconstruction_loss": report.loss}
        return AttackResult(served, arch, report.steps, info)
