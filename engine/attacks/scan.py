"""The trigger-search toolkit both detectors (``gan``, ``neural-cleanse``) build on.

* :class:`ScanSet`: the attacker's clean images split into a search and a validation part,
  labelled by the suspect's own predictions;
* :class:`ScanReporter`: ClassScan streaming (running estimates, then final sizes);
* :class:`CostSchedule` / :func:`pick_restarts`: Neural Cleanse's per-class cost schedule,
  best-so-far record and the choice among restarts;
* :func:`frozen` / :func:`batched_logits`: the suspect as a fixed function scored on all
  stacked (class x image) inputs at once.

Searches are not classifier training: they optimise triggers or generators against a frozen
model in their own small loops, which call ``ctx.between_steps()`` every step so Pause/Stop
work mid-scan. Classifier fine-tuning goes through ``TrainLoop`` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Iterator

import torch
from torch import nn

from engine.data.base import as_float
from engine.errors import ConfigError
from engine.events import ClassScan
from engine.metrics import predictions
from engine.session import JobContext


@dataclasses.dataclass
class ScanSet:
    """The attacker's clean images for a search: ``train`` to optimise on, ``val`` to measure
    sizes on (the paper's "validation images"), with the suspect's own predictions as labels
    (a detector needs no ground truth; an image the model already puts in class c says
    nothing about the way to c, so it is left out of c's loss and size)."""

    train_x: torch.Tensor
    train_pred: torch.Tensor
    val_x: torch.Tensor
    val_pred: torch.Tensor

    @classmethod
    def build(
        cls, model: nn.Module, images: torch.Tensor, *, limit: int, val: int, seed: int
    ) -> ScanSet:
        if len(images) < 2:
            raise ConfigError("the scan needs at least 2 clean images (raise --data-fraction)")
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(images), generator=gen).to(images.device)
        if limit:
            order = order[:limit]
        n_val = min(val, len(order) // 2) if val else max(1, len(order) // 5)
        x = images[order]
        pred = predictions(model, x)
        return cls(x[n_val:], pred[n_val:], x[:n_val], pred[:n_val])

    def generator(self, seed: int) -> torch.Generator:
        """The search's batch sampler, on the images' device: a CPU generator would send the
        indices over with a host sync every step on a GPU."""
        return torch.Generator(device=self.train_x.device).manual_seed(seed)

    def batch(
        self, step: int, size: int, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.randint(0, len(self.train_x), (size,), generator=gen, device=gen.device)
        return as_float(self.train_x[idx]), self.train_pred[idx]


def others_mask(pred: torch.Tensor, k: int) -> torch.Tensor:
    """[K,B] float: 1 where image b is not already predicted as candidate class k."""
    classes = torch.arange(k, device=pred.device).unsqueeze(1)
    return (pred.unsqueeze(0) != classes).float()


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-class mean over the images that count ([K,B] -> [K])."""
    return (values * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class ScanReporter:
    """Streams ClassScan events: running estimates every ``every`` steps (``done`` False),
    then the final validation sizes (``done`` True), one event per class, each saying how
    many of the ``steps`` steps are done (the dashboard's progress and ETA).

    A slow scan (a CPU: 1.5 s a step) also reports once ``quiet`` seconds have passed
    without a report, so its progress moves between the ``every``-step reports."""

    def __init__(
        self, ctx: JobContext, phase: str, k: int, every: int, steps: int = 0, quiet: float = 5.0
    ) -> None:
        self.ctx, self.phase, self.k, self.every = ctx, phase, k, max(1, every)
        self.steps, self.quiet = steps, quiet
        self._last = time.monotonic()

    def running(self, step: int, sizes: torch.Tensor) -> None:
        now = time.monotonic()
        if (step + 1) % self.every and now - self._last < self.quiet:
            return
        self._last = now
        for c, size in enumerate(sizes.detach().cpu().tolist()):  # one sync per report
            self._emit(c, size, done=False, step=step + 1)

    def final(self, sizes: list[float]) -> None:
        for c, size in enumerate(sizes):
            self._emit(c, size, done=True, step=self.steps)

    def _emit(self, cls: int, size: float, *, done: bool, step: int) -> None:
        self.ctx.emit(ClassScan(self.phase, cls, float(size), done, step=step, steps=self.steps))


class CostSchedule:
    """Neural Cleanse's per-class cost schedule and best-so-far record, for S stacked
    mask/pattern slots (classes x restarts).

    Every ``patience`` steps each slot's cost (the weight of its size term) rises by
    ``cost_up`` if its batch attack success reached ``target_success`` in at least half of
    those steps, else falls by ``cost_up ** 1.5``; so every class ends near the smallest
    trigger that still works, which is what makes sizes comparable across classes. The
    record keeps, per slot, the smallest-sized mask and pattern seen at success >=
    ``target_success`` (early stopping per class); a slot that never got there keeps its
    last state.
    """

    def __init__(
        self,
        slots: int,
        init_cost: float,
        target_success: float,
        patience: int,
        cost_up: float,
        device: torch.device,
    ) -> None:
        self.cost = torch.full((slots,), init_cost, device=device)
        self.best = torch.full((slots,), math.inf, device=device)
        self.succeeded = torch.zeros(slots, device=device)
        self.target, self.patience, self.up = target_success, patience, cost_up
        self.mask: torch.Tensor | None = None
        self.pattern: torch.Tensor | None = None

    @torch.no_grad()
    def update(
        self,
        step: int,
        success: torch.Tensor,
        size: torch.Tensor,
        mask: torch.Tensor,
        pattern: torch.Tensor,
    ) -> None:
        if self.mask is None or self.pattern is None:
            self.mask, self.pattern = mask.detach().clone(), pattern.detach().clone()
        ok = success >= self.target
        better = ok & (size < self.best)
        self.best = torch.where(better, size, self.best)
        # torch.where, not boolean indexing: no device-to-host sync per step on a GPU
        self.mask = torch.where(_per_slot(better, mask), mask.detach(), self.mask)
        self.pattern = torch.where(_per_slot(better, pattern), pattern.detach(), self.pattern)
        self.succeeded += ok.float()
        if (step + 1) % self.patience == 0:
            up = self.succeeded >= self.patience / 2
            self.cost = torch.where(up, self.cost * self.up, self.cost / self.up**1.5)
            self.succeeded.zero_()

    def running(self, size: torch.Tensor) -> torch.Tensor:
        return torch.where(self.best.isfinite(), self.best, size.detach())

    @torch.no_grad()
    def finish(
        self, mask: torch.Tensor, pattern: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The recorded (mask, pattern) per slot; the last state where none succeeded."""
        if self.mask is None or self.pattern is None:
            return mask.detach().clone(), pattern.detach().clone()
        never = ~self.best.isfinite()
        self.mask = torch.where(_per_slot(never, mask), mask.detach(), self.mask)
        self.pattern = torch.where(_per_slot(never, pattern), pattern.detach(), self.pattern)
        return self.mask, self.pattern


def _per_slot(flags: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[S] flags shaped to broadcast over [S,...] tensors."""
    return flags.view(-1, *([1] * (like.dim() - 1)))


def pick_restarts(
    sizes: torch.Tensor, success: torch.Tensor, classes: int, target_success: float
) -> torch.Tensor:
    """[classes] the slot (r * classes + c) of each class's best restart: the smallest size
    among the restarts whose validation success is within 0.1 of ``target_success``, else
    the most successful one."""
    restarts = len(sizes) // classes
    size = sizes.view(restarts, classes)
    ok = success.view(restarts, classes) >= target_success - 0.1
    key = torch.where(ok, size, math.inf)
    fallback = success.view(restarts, classes).argmax(0)
    pick = torch.where(ok.any(0), key.argmin(0), fallback)
    return pick * classes + torch.arange(classes, device=sizes.device)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """The suspect in eval mode with gradients off for the search (restored afterwards):
    searches differentiate through the model, never into its weights."""
    was_training = model.training
    changed = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in changed:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p in changed:
            p.requires_grad_(True)
        model.train(was_training)


#: Most stamped images per classifier call on the CPU. One call on all K x B images (1,280 in
#: a default 10-class scan) is slower per image there than several of 256: oneDNN's
#: convolutions fall out of the cache (a lenet5 scan step 1.7x slower, benchmarks/gan_scan.py
#: ratio). A GPU gets the whole stack in one call. The suspect is in eval mode, so chunks
#: score each image exactly as one call would.
CPU_CHUNK = 256


def batched_logits(model: nn.Module, xs: torch.Tensor) -> torch.Tensor:
    """[K,B,C,H,W] -> logits [K,B,classes]: the classifier on all K x B images, in one call
    (CPU: in chunks of :data:`CPU_CHUNK`)."""
    k, b = xs.shape[:2]
    flat = xs.reshape(k * b, *xs.shape[2:])
    if flat.device.type != "cpu" or len(flat) <= CPU_CHUNK:
        return model(flat).view(k, b, -1)
    return torch.cat([model(part) for part in flat.split(CPU_CHUNK)]).view(k, b, -1)
