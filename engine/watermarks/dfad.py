"""Truncated data-free adversarial distillation (Yan, Li, Wang, sec. 3.1; DFAD, Fang et al.).

A generator G and a student S of the teacher's architecture play a min-max game over the
teacher-student discrepancy on G's samples (eq. 2): S steps to shrink it, G steps to grow it,
``student_steps`` S steps per G step. G's samples then stand in for the training data the
data-free owner does not have.

**What an epoch is here.** There is no dataset to pass over, so an epoch is ``iters`` rounds
of (``student_steps`` S steps, then one G step), each on a fresh batch of ``batch_size``
codes: DFAD's own ``epoch_itrs`` (50 rounds by default). The epoch's discrepancy is the mean
of its S-step losses: the curve of the paper's Fig. 3.

**Truncation.** With D[t] the discrepancy of epoch t (1-based), the second-order difference
is Delta[t] = D[t] - 2 D[t-1] + D[t-2] (from epoch 3 on). Delta0 is the largest Delta over
the first ``t0`` epochs (fixed at epoch 3 if ``t0`` < 3, the first epoch that has one); from
the next epoch on, the first epoch with Delta[t] <= Delta0 / 10 ends the distillation and its
generator is kept. ``complete`` runs all ``epochs`` regardless (the baseline of Table 2). The
rule is the paper's as written: a noisy curve whose second difference dips below the
threshold early truncates early, and the run says so (Log line, ``Discrepancy.truncated``).

**Student clipping** (ours). With eq. 2's squared error the game ran away on a fashion-mnist
lenet5 (width 32, batch 128): the generator found inputs the teacher answers with ever larger
logits, the student's SGD steps (rate 1e-2) could not follow, and the discrepancy rose from 41
to 2,987 in 80 rounds (then NaN); with the student's gradient norm clipped at 5 it fell to 18.5
over the same rounds. ``student_clip`` (5 by default, 0: off) keeps that; the DFAD code's L1
discrepancy (``--discrepancy l1``) needs no clipping (4.6 -> 3.3).

This is not a TrainLoop: two networks take turns and one of them *maximises* the loss, which
the one training loop (a classifier minimising its loss over batches) does not express.
The watermark injection that follows does go through it.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from engine import progress
from engine.events import Discrepancy, Metrics
from engine.models.dfad_generator import DFADGenerator
from engine.session import JobContext
from engine.training import Diverged, OptimSettings, make_optimizer


@dataclasses.dataclass(frozen=True)
class DistillSettings:
    """The paper's settings (sec. 4.1) and DFAD's where the paper is silent."""

    epochs: int = 40
    iters: int = 50
    student_steps: int = 5
    batch_size: int = 256
    t0: int = 5
    complete: bool = False
    discrepancy: str = "l2"
    student_lr: float = 1e-2
    student_clip: float = 5.0
    generator_lr: float = 1e-4
    width: int = 64


class Truncation:
    """The stopping rule alone, fed one epoch's discrepancy at a time (tested on its own)."""

    def __init__(self, t0: int) -> None:
        self.t0 = t0
        self.values: list[float] = []
        self.second_diffs: list[float | None] = []
        self.delta0: float | None = None

    @property
    def threshold(self) -> float | None:
        return None if self.delta0 is None else self.delta0 / 10

    def add(self, value: float) -> bool:
        """Record epoch ``len(values)+1``; True when the rule truncates at this epoch."""
        self.values.append(value)
        t = len(self.values)
        diff = None if t < 3 else value - 2 * self.values[-2] + self.values[-3]
        self.second_diffs.append(diff)
        if diff is None:
            return False
        if t <= max(self.t0, 3):
            self.delta0 = diff if self.delta0 is None else max(self.delta0, diff)
            return False
        assert self.threshold is not None
        return diff <= self.threshold


@dataclasses.dataclass
class DistillResult:
    generator: DFADGenerator
    discrepancies: list[float]
    second_diffs: list[float | None]
    delta0: float | None
    truncated_at: int | None  # the epoch the rule stopped at (None: ran the full schedule)
    epochs_run: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "discrepancy": [round(v, 6) for v in self.discrepancies],
            "second_diff": [None if v is None else round(v, 6) for v in self.second_diffs],
            "delta0": self.delta0,
            "truncated_at": self.truncated_at,
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 2),
        }


def discrepancy(teacher: torch.Tensor, student: torch.Tensor, kind: str) -> torch.Tensor:
    """Eq. (2): squared L2 between logits (mean over the batch and outputs); ``l1`` is the
    DFAD code's mean absolute difference."""
    if kind == "l1":
        return F.l1_loss(student, teacher)
    return F.mse_loss(student, teacher)


def truncation_lines(
    epoch: int, epochs: int, second_diff: float, threshold: float, delta0: float, first: int
) -> tuple[str, str]:
    """Why the distillation stopped, the rule's decision first and short (an 80-column log
    cut the old single line before its numbers), then where the threshold comes from."""
    return (
        f"distillation truncated at epoch {epoch}/{epochs}: 2nd diff {second_diff:.3g} "
        f"<= Delta0/10 = {threshold:.3g}",
        f"  Delta0 = {delta0:.3g}, the largest second difference of the first {first} epochs",
    )


def distill(
    teacher: nn.Module,
    student: nn.Module,
    shape: tuple[int, int, int],
    settings: DistillSettings,
    ctx: JobContext,
    *,
    seed: int = 0,
    phase: str = "distill",
) -> DistillResult:
    """Train G against ``student`` from the frozen ``teacher``; truncated unless
    ``settings.complete``. Emits one :class:`Discrepancy` (and a Metrics reading) per epoch;
    takes commands and honours Stop between rounds."""
    device = next(teacher.parameters()).device
    torch.manual_seed(seed)
    generator = DFADGenerator(shape, width=settings.width).to(device)
    optim_s = make_optimizer(
        student.parameters(),
        OptimSettings("sgd", settings.student_lr, momentum=0.9, weight_decay=5e-4),
    )
    optim_g = make_optimizer(generator.parameters(), OptimSettings("adam", settings.generator_lr))
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student.train()
    generator.train()
    rule = Truncation(settings.t0)
    codes = torch.Generator().manual_seed(seed * 7_919 + 17)
    truncated_at = None
    started = time.monotonic()
    said = progress.Throttle(ctx.log)
    for epoch in range(1, settings.epochs + 1):
        losses = torch.zeros(settings.iters * settings.student_steps, device=device)
        tick = time.perf_counter()
        for i in range(settings.iters):
            # an epoch of the paper's sizes takes 20 s on a CPU: say how far it is
            said(f"distillation epoch {epoch}/{settings.epochs}, iterations", i, settings.iters)
            ctx.between_steps()
            for k in range(settings.student_steps):
                ctx.check_stop()  # a step of the paper's sizes takes a second on a CPU
                z = torch.randn(settings.batch_size, generator.z_dim, generator=codes).to(device)
                with torch.no_grad():
                    fake = generator(z)
                    target = teacher(fake)
                loss_s = discrepancy(target, student(fake), settings.discrepancy)
                optim_s.zero_grad(set_to_none=True)
                loss_s.backward()
                if settings.student_clip > 0:
                    nn.utils.clip_grad_norm_(student.parameters(), settings.student_clip)
                optim_s.step()
                losses[i * settings.student_steps + k] = loss_s.detach()
            z = torch.randn(settings.batch_size, generator.z_dim, generator=codes).to(device)
            fake = generator(z)
            loss_g = -discrepancy(teacher(fake), student(fake), settings.discrepancy)
            optim_g.zero_grad(set_to_none=True)
            loss_g.backward()
            optim_g.step()
        value = float(losses.mean())
        seconds = time.perf_counter() - tick
        if not math.isfinite(value):
            raise Diverged(
                f"distillation diverged in epoch {epoch} (discrepancy {value}); lower "
                "--generator-lr or --student-lr, or keep --student-clip",
                step=epoch * settings.iters,
                phase=phase,
            )
        stop = rule.add(value) and not settings.complete
        ctx.emit(
            Discrepancy(
                phase,
                epoch,
                settings.epochs,
                value,
                second_diff=rule.second_diffs[-1],
                threshold=rule.threshold,
                truncated=stop,
            )
        )
        rounds = settings.iters * (settings.student_steps + 1)
        ctx.emit(
            Metrics(
                phase=phase,
                step=epoch * settings.iters,
                epoch=float(epoch),
                lr=settings.student_lr,
                loss=value,
                images_per_s=rounds * settings.batch_size / max(seconds, 1e-9),
            )
        )
        if stop:
            truncated_at = epoch
            first = max(settings.t0, 3)
            for line in truncation_lines(
                epoch, settings.epochs, rule.second_diffs[-1], rule.threshold, rule.delta0, first
            ):
                ctx.log(line)
            break
    else:
        why = "--complete" if settings.complete else "the rule never fired"
        ctx.log(f"distillation ran all {settings.epochs} epochs ({why})")
    return DistillResult(
        generator,
        rule.values,
        rule.second_diffs,
        rule.delta0,
        truncated_at,
        len(rule.values),
        time.monotonic() - started,
    )
