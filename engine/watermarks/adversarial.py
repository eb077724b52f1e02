"""Adversarial examples of a trained model, for the schemes whose keys sit at its decision
boundary (``frontier``, ``blackmarks``).

Keys are stored as uint8 images like every other image of the engine, so an example is
only final once rounded: :func:`fgsm_uint8` perturbs in floats, then rounds to the 8-bit
grid and clamps every pixel to at most ``floor(255 * eps)`` levels from its source. That
clamp is what keeps a stored key within ``eps`` (L-inf, [0, 1] pixel units) of its source:
rounding alone could add half a level. Whatever a scheme decides about an example (did the
prediction flip? did it reach its target?) it decides on the rounded image, the one a
verifier will send.

Gradients are taken with :func:`torch.autograd.grad` on the input only: the model's
parameter gradients and its train/eval mode are left as they were, and no global RNG is
drawn, so making a key changes nothing about the training that follows.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from engine import stopping
from engine.data.base import as_float

#: images per forward/backward pass while making keys
BATCH = 256


def eps_levels(eps: float) -> int:
    """The largest whole number of 8-bit levels within ``eps`` (tolerating float noise:
    0.1 * 255 is 25.5 levels, so 25)."""
    return math.floor(eps * 255 + 1e-6)


def to_uint8_within(x_adv: torch.Tensor, source: torch.Tensor, eps: float) -> torch.Tensor:
    """Float examples in [0, 1] -> uint8, every pixel at most ``eps`` from the uint8 source."""
    levels = eps_levels(eps)
    rounded = (x_adv.clamp(0, 1) * 255).round()
    low = source.to(torch.int16) - levels
    high = source.to(torch.int16) + levels
    return (
        torch.maximum(torch.minimum(rounded.to(torch.int16), high), low)
        .clamp(0, 255)
        .to(torch.uint8)
    )


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Argmax labels of uint8 images, in eval mode, batch by batch."""
    was = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(x), BATCH):
            stopping.check()
            out.append(model(as_float(x[i : i + BATCH])).argmax(1))
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


@torch.no_grad()
def mean_logits(model: nn.Module, x: torch.Tensor, y: torch.Tensor, classes: int) -> torch.Tensor:
    """The model's mean logit vector over the images of each class ([classes, outputs])."""
    was = model.training
    model.eval()
    sums: torch.Tensor | None = None
    counts = torch.zeros(classes, device=x.device)
    try:
        for i in range(0, len(x), BATCH):
            stopping.check()
            logits = model(as_float(x[i : i + BATCH])).float()
            labels = y[i : i + BATCH]
            if sums is None:
                sums = torch.zeros(classes, logits.shape[1], device=x.device)
            sums.index_add_(0, labels, logits)
            counts += torch.bincount(labels, minlength=classes)[:classes].float()
    finally:
        model.train(was)
    assert sums is not None
    return sums / counts.clamp(min=1).unsqueeze(1)


def _signed_gradient(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """sign(d CE(model(x), labels) / dx) for a float batch, in eval mode."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), labels)
        (grad,) = torch.autograd.grad(loss, x)
    return grad.sign()


def fgsm_uint8(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    targeted: bool = False,
) -> torch.Tensor:
    """Goodfellow et al.'s fast gradient sign method (L-inf, one step of ``eps``) on uint8
    images: away from ``labels`` (untargeted), or towards them (``targeted``), rounded
    within ``eps`` of the sources (see the module docstring)."""
    was = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(x), BATCH):
            stopping.check()
            source = x[i : i + BATCH]
            batch = as_float(source)
            step = _signed_gradient(model, batch, labels[i : i + BATCH]) * eps
            adv = batch - step if targeted else batch + step
            out.append(to_uint8_within(adv, source, eps))
    finally:
        model.train(was)
    return torch.cat(out) if out else x[:0].clone()


def minimal_targeted_fgsm(
    model: nn.Module, x: torch.Tensor, targets: torch.Tensor, eps: float, steps: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Targeted FGSM with the smallest strength that reaches the target, as ART's
    ``FastGradientMethod(minimal=True, targeted=True)`` that WRT's Blackmarks uses: strengths
    ``eps / steps, 2 eps / steps, ... eps`` are tried in turn and each image keeps the first
    that makes the (rounded) example land on its target. Returns (examples, reached); an
    image no strength moved keeps its ``eps`` example with ``reached`` False."""
    best = x.clone()
    reached = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for k in range(1, steps + 1):
        todo = (~reached).nonzero().flatten()
        if len(todo) == 0:
            break
        strength = eps * k / steps
        adv = fgsm_uint8(model, x[todo], targets[todo], strength, targeted=True)
        hit = predict(model, adv) == targets[todo]
        best[todo] = adv
        reached[todo[hit]] = True
    return best, reached
