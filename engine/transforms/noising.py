"""``input-noising``: Gaussian noise of standard deviation ``sigma`` is added to every query.

Source: WRT ``wrt/attacks/removal/input_noising.py`` (noise of mean 0 added to the [0, 1]
image, then clipped to [0, 1]); default sigma 0.01 from WRT
``configs/cifar10/attack_configs/input_noising.yaml`` (0.03, 0.05 and 0.1 in
``input_noising1`` to ``3``).

WRT draws from numpy's global generator, so two verifications of one model differ. Ours is
seeded: the noise of the n-th batch a loaded model is asked about comes from
``(noise_seed, n)``, so the same queries in the same order (a verification, a report) get the
same answer on every load. ``noise_seed`` -1 (the default) becomes the attacker's seed when
the attack deploys the model, and the resolved number is what ``deploy.json`` records.
"""

from __future__ import annotations

import dataclasses

import torch

from engine.registry import param
from engine.transforms.registry import InputTransform, make_transform, register_transform


@dataclasses.dataclass(frozen=True)
class NoisingParams:
    sigma: float = param(
        0.01, "standard deviation of the noise, in [0,1] pixel units", low=0.0, high=10.0
    )
    noise_seed: int = param(
        -1, "seed of the noise (-1: the attacker's seed)", low=-1, high=2**32 - 1
    )


@register_transform("input-noising", NoisingParams)
class InputNoising(InputTransform):
    """Add seeded Gaussian noise to every query, clipped to [0, 1]."""

    def __init__(self, params: NoisingParams) -> None:
        super().__init__(params)
        self.calls = 0

    def resolved(self, seed: int) -> InputTransform:
        if self.params.noise_seed >= 0:
            return self
        return make_transform(self.name, dataclasses.replace(self.params, noise_seed=seed))

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        if self.params.sigma == 0:
            return x
        seed = max(self.params.noise_seed, 0) * 1_000_003 + self.calls
        self.calls += 1
        generator = torch.Generator(device=x.device).manual_seed(seed)
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + self.params.sigma * noise).clamp(0, 1)
