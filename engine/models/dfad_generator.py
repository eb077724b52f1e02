"""The data-free generator of DFAD (Fang et al.), as the data-free watermark paper uses it.

z ~ N(0, I) of 256 -> Linear -> BatchNorm -> (upsample x2, conv, BN, LeakyReLU) -> (upsample
x2, conv, BN, LeakyReLU, conv) -> Tanh -> BatchNorm2d(affine=False): three convolutional
layers, as the paper says, and the closest public DFAD code's layout. The last, affine-free
BatchNorm keeps every channel of a batch at zero mean and unit variance, the input scale the
student and teacher are queried at. That scale is a *standardised* input, which DFAD's
teachers take (their inputs are normalised by the dataset's mean and std); ours take pixels in
[0, 1], so the output is mapped by ``0.5 + 0.5 x`` (zero maps to mid-grey, one standard
deviation to the ends of the range). Unmapped, a fashion-mnist lenet5 answered the first
samples with logits of about 212 (33 after the mapping). No range is imposed: the images are
substitutes, not pictures.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.errors import ConfigError

Z_DIM = 256
#: standardised output -> the [0, 1] pixel scale our models take (see the module doc)
PIXEL_MEAN, PIXEL_SPREAD = 0.5, 0.5


class DFADGenerator(nn.Module):
    """``G(z)`` for images of ``shape`` (C, H, W); H and W must be multiples of 4 (two
    doublings from a quarter-size seed)."""

    def __init__(self, shape: tuple[int, int, int], z_dim: int = Z_DIM, width: int = 64) -> None:
        super().__init__()
        channels, height, width_px = shape
        if height % 4 or width_px % 4:
            raise ConfigError(
                f"datafree: the generator needs image sides divisible by 4, not {height}x{width_px}"
            )
        self.z_dim = z_dim
        self.seed_shape = (2 * width, height // 4, width_px // 4)
        self.project = nn.Linear(z_dim, 2 * width * (height // 4) * (width_px // 4))
        self.seed_norm = nn.BatchNorm2d(2 * width)
        self.block1 = nn.Sequential(
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(2 * width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.Tanh(),
            nn.BatchNorm2d(channels, affine=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.seed_norm(self.project(z).view(len(z), *self.seed_shape))
        out = self.block1(nn.functional.interpolate(out, scale_factor=2))
        return PIXEL_MEAN + PIXEL_SPREAD * self.block2(
            nn.functional.interpolate(out, scale_factor=2)
        )

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images from fresh codes, without gradients (substitute data, GI triggers).
        Batch statistics are used, as during distillation (the DFAD code never switches the
        generator to eval mode)."""
        device = self.project.weight.device
        z = torch.randn(n, self.z_dim, generator=generator).to(device)
        self.train()
        with torch.no_grad():
            return self(z)
