"""AdvGAN generators and discriminators, stacked: K independent networks in one forward.

The GAN watermark scan (Wang, Xue et al.) trains one AdvGAN per candidate target class. Run
one class after another, a 10-class scan costs 10 trainings; here the K generators' weights
live side by side in grouped convolutions (``groups=K``), so one call maps a batch to K
perturbations, one per candidate class, and the classifier scores all K x B perturbed images
in one forward. Groups never mix: generator k's output depends only on generator k's
weights, exactly as K separate networks would.

Two generators:

* :class:`StackedGenerator` — AdvGAN's image-conditioned generator, ``G_k(x)`` (the paper's
  letter: a perturbation per image).
* :class:`StackedTrigger` — the input-agnostic variant: ``G_k`` maps a fixed code to a
  mask and pattern shared by every image (``x' = (1 - m_k) x + m_k p_k``). A generator whose
  input never changes is its output, so the output is parametrised directly (logits of the
  mask and pattern); what makes it trigger-like is that one perturbation must work for all x.

:class:`StackedDiscriminator` is AdvGAN's D, stacked the same way, for the L_GAN term.
"""

from __future__ import annotations

import torch
from torch import nn


def _block(k: int, c_in: int, c_out: int, *, stride: int = 1, up: bool = False) -> nn.Module:
    conv: nn.Module
    if up:
        conv = nn.ConvTranspose2d(k * c_in, k * c_out, 4, stride=2, padding=1, groups=k)
    else:
        conv = nn.Conv2d(k * c_in, k * c_out, 3, stride=stride, padding=1, groups=k)
    # GroupNorm with K groups normalises each generator's channels on their own
    return nn.Sequential(conv, nn.GroupNorm(k, k * c_out), nn.ReLU())


class StackedGenerator(nn.Module):
    """K AdvGAN generators (encoder, bottleneck, decoder, tanh), one per candidate class.

    ``forward(x)`` with x float [B,C,H,W] in [0,1] returns perturbations [K,B,C,H,W] bounded
    by ``bound`` (tanh scaling, as AdvGAN clips its output).
    """

    def __init__(self, shape: tuple[int, int, int], k: int, width: int = 8, bound: float = 1.0):
        super().__init__()
        c, h, w = shape
        self.k, self.shape, self.bound = k, shape, bound
        self.encoder = nn.Sequential(
            _block(k, c, width),
            _block(k, width, 2 * width, stride=2),
            _block(k, 2 * width, 2 * width),
        )
        self.decoder = nn.Sequential(_block(k, 2 * width, width, up=True))
        self.head = nn.Conv2d(k * width, k * c, 3, padding=1, groups=k)
        self.out_hw = (h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        z = self.decoder(self.encoder(x.repeat(1, self.k, 1, 1)))
        if z.shape[-2:] != (h, w):  # odd sizes: the stride-2 round trip loses a pixel
            z = nn.functional.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)
        out = torch.tanh(self.head(z)) * self.bound
        return out.view(b, self.k, c, h, w).transpose(0, 1)


#: How a restart of a trigger search starts (:class:`StackedTrigger`):
#: ``small``: nearly transparent mask, grey pattern (grow only what is needed);
#: ``random``: mask and pattern uniform random (Neural Cleanse's code);
#: ``full``: nearly opaque mask over a random pattern (start from a replaced image, shrink).
TRIGGER_INITS = ("small", "random", "full")


def parse_inits(value: str) -> tuple[str, ...]:
    """``"full,random"`` -> ("full", "random"): one restart per entry, checked."""
    inits = tuple(part.strip() for part in value.split(",") if part.strip())
    bad = [i for i in inits if i not in TRIGGER_INITS]
    if not inits or bad:
        from engine.errors import ConfigError

        raise ConfigError(f"inits: a comma list of {', '.join(TRIGGER_INITS)}, got {value!r}")
    return inits


class StackedTrigger(nn.Module):
    """K input-agnostic triggers: mask [K,1,H,W] and pattern [K,C,H,W], both in [0,1].

    With ``inits`` of length R there are R restarts per class, K*R slots in all: slot
    ``r * K + c`` is restart r of class c, started as ``inits[r]`` says (see
    :data:`TRIGGER_INITS`). The default, one ``small`` restart, starts from the clean image.
    Random draws use torch's global generator (seed it before building).
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        k: int,
        init_mask: float = -4.0,
        inits: tuple[str, ...] = ("small",),
    ) -> None:
        super().__init__()
        c, h, w = shape
        self.classes, self.restarts = k, len(inits)
        self.k, self.shape = k * len(inits), shape
        masks, patterns = [], []
        for init in inits:
            if init == "small":
                masks.append(torch.full((k, 1, h, w), init_mask))
                patterns.append(torch.zeros(k, c, h, w))
            elif init == "random":
                masks.append(_logit(torch.rand(k, 1, h, w)))
                patterns.append(_logit(torch.rand(k, c, h, w)))
            elif init == "full":
                masks.append(torch.full((k, 1, h, w), 3.0))
                patterns.append(torch.randn(k, c, h, w) * 2)
            else:
                raise ValueError(f"unknown trigger init {init!r}")
        self.mask_logit = nn.Parameter(torch.cat(masks))
        self.pattern_logit = nn.Parameter(torch.cat(patterns))

    def mask(self) -> torch.Tensor:
        return torch.sigmoid(self.mask_logit)

    def pattern(self) -> torch.Tensor:
        return torch.sigmoid(self.pattern_logit)

    def targets(self, device: torch.device | None = None) -> torch.Tensor:
        """[K*R] the class each slot searches for."""
        return torch.arange(self.classes, device=device).repeat(self.restarts)

    def apply(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Stamp x [B,C,H,W]: all K triggers -> [K,B,C,H,W]; with ``index`` [B], trigger
        ``index[i]`` on image i -> [B,C,H,W]."""
        m, p = self.mask(), self.pattern()
        if index is None:
            return torch.lerp(x.unsqueeze(0), p.unsqueeze(1), m.unsqueeze(1))
        return torch.lerp(x, p[index], m[index])


def _logit(u: torch.Tensor) -> torch.Tensor:
    u = u.clamp(0.02, 0.98)
    return torch.log(u / (1 - u))


class StackedDiscriminator(nn.Module):
    """K AdvGAN discriminators (conv, LeakyReLU, ..., one score per image), stacked.

    ``forward(x)`` with x [K,B,C,H,W] (slice k: what generator k is judged on) returns
    scores [K,B]; LSGAN-style targets (1 real, 0 perturbed) as in the paper's eq. (1).
    """

    def __init__(self, shape: tuple[int, int, int], k: int, width: int = 8) -> None:
        super().__init__()
        c, _, _ = shape
        self.k = k
        self.net = nn.Sequential(
            nn.Conv2d(k * c, k * width, 4, stride=2, padding=1, groups=k),
            nn.LeakyReLU(0.2),
            nn.Conv2d(k * width, k * 2 * width, 4, stride=2, padding=1, groups=k),
            nn.GroupNorm(k, k * 2 * width),
            nn.LeakyReLU(0.2),
            nn.Conv2d(k * 2 * width, k, 3, padding=1, groups=k),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, b, c, h, w = x.shape
        folded = x.transpose(0, 1).reshape(b, k * c, h, w)
        scores = self.net(folded).mean(dim=(2, 3))  # [B,K]
        return scores.transpose(0, 1)
