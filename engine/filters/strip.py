"""``strip``: a thief's server that spots trigger-carrying queries and answers them wrongly.

STRIP (Gao et al., "STRIP: A Defence Against Trojan Attacks on Deep Neural Networks", ACSAC
2019) superimposes each query on ``n`` clean images and measures the entropy of the
classifier's predictions over the blends: a clean image blended with another is classified
anywhere, while an image carrying a trigger keeps the trigger's class, so its entropy is LOW.
The paper's entropy is in bits, summed over the ``n`` blends and divided by ``n`` (its code,
``garrisongys/STRIP``, ``entropyCal``). The default blend is ``alpha * x + (1 - alpha) *
clean`` with ``n`` 64 and ``alpha`` 0.5, TrojanZoo's and backdoor-toolbox's STRIP defaults;
``blend = "add"`` is the paper's code as we read it (``cv2.addWeighted(background, 1, overlay,
1, 0)``: both images at full weight, saturating), ``x + clean`` clipped to [0, 1], where a
white trigger stays white. The difference matters: a model trained to answer its exact trigger
(our ``pattern`` scheme trains against decoys) no longer fires on a half-intensity one
(docs/attacks.md, measured). The ``n`` clean images are fixed once, so a query's answer
depends on the query alone.

Turned around, STRIP is the evasion of a watermark verifier: the owner's key is a trigger, so
the thief answers flagged queries wrongly (Namba & Sakuma, AsiaCCS 2019, "query
modification"; Hitaj et al., SNAMS 2019, whose detector-guarded server answers a detected
watermark query with a random class). ``answer = "random"`` swaps the top logit with that of
another class drawn from a hash of the query (seeded, so one query always gets one answer);
``"second"`` swaps it with the second-best. A swap keeps the logits' values, so a
probability answer looks as confident as an honest one.

Stored in ``deploy.safetensors``: the ``n`` blending images (uint8) and the entropy threshold,
which :mod:`engine.attacks.strip_evasion` sets on the attacker's clean data. Each query costs
``n + 1`` forward passes of the classifier, batched in chunks of ``CHUNK`` blends.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from engine import stopping
from engine.filters.registry import AnswerFilter, register_filter
from engine.registry import param

#: blends per forward pass of the classifier: bounds memory whatever the caller's batch (on a
#: CPU, LeNet-5 answers 2,048-image batches faster per image than 8,192-image ones)
CHUNK = 2048
ANSWERS = ("random", "second")
#: how a query and a clean image are superimposed: ``alpha`` mixing, or the paper's addition
BLENDS = ("mix", "add")


@dataclasses.dataclass(frozen=True)
class StripParams:
    n: int = param(64, "clean images each query is superimposed on", low=1, high=4096)
    alpha: float = param(0.5, "weight of the query in each blend", low=0.0, high=1.0, low_open=True)
    answer: str = param(
        "random",
        "a flagged query's answer: a random other class, or the second-best",
        choices=ANSWERS,
    )
    seed: int = param(0, "seed of the random answers", low=0, high=2**31 - 1)
    blend: str = param(
        "mix", "superimposition: alpha*x + (1-alpha)*clean, or x + clean clipped", choices=BLENDS
    )
    channels: int = param(1, "channels of the blending images", low=1, high=64)
    height: int = param(28, "height of the blending images", low=1, high=4096)
    width: int = param(28, "width of the blending images", low=1, high=4096)


@register_filter("strip", StripParams)
class Strip(AnswerFilter):
    """Answer a query whose blends' mean prediction entropy is below the threshold wrongly."""

    learnt = True

    def __init__(self, params: StripParams) -> None:
        super().__init__(params)
        shape = (params.n, params.channels, params.height, params.width)
        self.register_buffer("clean", torch.zeros(shape, dtype=torch.uint8))
        # -inf until calibrated: an uncalibrated filter flags nothing
        self.register_buffer("threshold", torch.full((1,), -math.inf))
        self._weights: torch.Tensor | None = None

    @torch.no_grad()
    def entropy(self, x: torch.Tensor, inner: nn.Module) -> torch.Tensor:
        """STRIP's normalised entropy (bits) of each float query in ``x``: ``[B]``."""
        p = self.params
        add = p.blend == "add"
        weight = 1.0 if add else p.alpha
        clean = self.clean.to(x.device, torch.float32).div(255.0) * (1.0 if add else 1 - p.alpha)
        per_chunk = max(1, CHUNK // p.n)
        out = []
        # blends are measurements: no dropout, and BatchNorm's statistics stay as they were
        was_training = inner.training
        inner.eval()
        try:
            with torch.autocast(x.device.type, enabled=False):
                for start in range(0, len(x), per_chunk):
                    stopping.check()
                    part = x[start : start + per_chunk].detach().float()
                    blends = (weight * part[:, None] + clean[None]).flatten(0, 1)
                    if add:
                        blends = blends.clamp_(0.0, 1.0)
                    probs = torch.softmax(inner(blends).float(), dim=1)
                    bits = -torch.special.xlogy(probs, probs).sum(1) / math.log(2.0)
                    out.append(bits.view(len(part), p.n).mean(1))
        finally:
            inner.train(was_training)
        return torch.cat(out) if out else x.new_zeros(0)

    def flagged(self, x: torch.Tensor, inner: nn.Module) -> torch.Tensor:
        """Which queries STRIP takes for trigger-carrying: entropy below the threshold."""
        return self.entropy(x, inner) < self.threshold.to(x.device)

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, logits: torch.Tensor, inner: nn.Module
    ) -> torch.Tensor:
        if logits.shape[1] < 2 or (inner.training and torch.is_grad_enabled()):
            # the loop fitting the classifier (a chain's fine-tuning after this step): the
            # filter serves queries, it is not part of what is fitted
            return logits
        flagged = self.flagged(x, inner)
        if not bool(flagged.any()):
            return logits
        top = logits.argmax(1)
        if self.params.answer == "second":
            other = logits.topk(2, dim=1).indices[:, 1]
        else:
            other = self.random_class(x, top, logits.shape[1])
        swapped = logits.clone()
        rows = torch.arange(len(logits), device=logits.device)
        swapped[rows, top] = logits[rows, other]
        swapped[rows, other] = logits[rows, top]
        return torch.where(flagged[:, None], swapped, logits)

    def random_class(self, x: torch.Tensor, top: torch.Tensor, classes: int) -> torch.Tensor:
        """A class other than ``top`` for each query, from a seeded hash of its pixels as
        served (8-bit): the same query always gets the same wrong answer, in any batch."""
        pixels = (x.detach().float().clamp(0, 1) * 255).round().long().flatten(1)
        weights = self._hash_weights(pixels.shape[1], x.device)
        # int64 sums may wrap on large images: still a deterministic function of the query
        mixed = (pixels * weights).sum(1) + self.params.seed
        draw = torch.remainder(torch.remainder(mixed, 2_147_483_629), classes - 1)
        return draw + (draw >= top).long()

    def _hash_weights(self, size: int, device: torch.device) -> torch.Tensor:
        if self._weights is None or len(self._weights) != size:
            gen = torch.Generator().manual_seed(self.params.seed * 2_654_435_761 + 97)
            self._weights = torch.randint(1, 2**31 - 1, (size,), generator=gen)
        return self._weights.to(device)
