"""THE training loop. Embedding, fine-tuning attacks and removal all run through it.

A step draws one mixed batch from several sources (owner data, key samples, unlabelled data
with pseudo-labels...), takes an optimizer step, and between steps hands control to the
session so commands apply without the UI touching the model. The loop never syncs with the
device per step: losses go into a device-side buffer read every ``log_every`` steps, and test
accuracy is measured every ``eval_every`` steps.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from engine import commands as cmd
from engine import optimizers, stopping
from engine.data.base import ImageSet
from engine.errors import ConfigError, UserError
from engine.events import Metrics
from engine.metrics import Probe, Transform, accuracy, prepare
from engine.session import JobContext


class Diverged(UserError):
    """The loss became NaN/inf; the model was restored to its last good state."""

    def __init__(self, message: str, step: int, phase: str) -> None:
        super().__init__(message)
        self.step = step
        self.phase = phase


#: a source's own loss term: (model, float images, the source's labels) -> scalar tensor
LossTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class Source:
    """Where part of every batch comes from.

    ``y`` gives labels; or ``label`` computes them from the (transformed) float batch, as
    pseudo-labelling does. ``transform`` stamps a trigger or perturbation onto the batch.
    ``draw`` makes ``per_batch`` fresh float images for a step instead of slicing ``x``
    (a data-free generator's samples): ``draw(step)``, seeded by the step so a resumed run
    replays them.

    ``loss`` and ``weight`` say what this source's part of the batch adds to the step's loss:
    sources with the defaults (cross-entropy, weight 1) share one mean over their images, as
    every scheme has always trained; any other source adds ``weight`` x its own mean, either
    cross-entropy on its labels or ``"mse"``, the squared error between the model's logits
    and the float targets its ``label`` computes (a teacher's logits: data-free embedding).
    ``loss`` may also be a :data:`LossTerm`, ``term(model, x, y) -> scalar``: the source's
    whole contribution, from a forward pass of its own (a loss on hidden layers, which the
    shared forward's logits cannot give: entangled watermarks' soft nearest-neighbour loss);
    its ``y`` is whatever the term reads (group labels, not necessarily classes).

    ``every`` = k makes the source take part only in every k-th step (steps k, 2k, ... counted
    from 1), drawing its next share of images each time: a watermark batch after every k
    clean ones (entangled watermarks' alternation). The default, 1, is every step.
    """

    name: str
    x: torch.Tensor | None
    per_batch: int
    y: torch.Tensor | None = None
    transform: Transform | None = None
    label: Callable[[torch.Tensor], torch.Tensor] | None = None
    draw: Callable[[int], torch.Tensor] | None = None
    loss: str | LossTerm = "ce"
    weight: float = 1.0
    every: int = 1

    def __post_init__(self) -> None:
        if self.y is None and self.label is None:
            raise ValueError(f"source {self.name!r} needs labels or a labelling function")
        if (self.x is None) == (self.draw is None):
            raise ValueError(f"source {self.name!r} needs images or a draw function, not both")
        if self.x is not None and len(self.x) == 0:
            raise ConfigError(f"source {self.name!r} has no images")
        if not callable(self.loss) and self.loss not in ("ce", "mse"):
            raise ValueError(f"source {self.name!r}: unknown loss {self.loss!r}")
        if self.every < 1:
            raise ValueError(f"source {self.name!r}: every must be at least 1, not {self.every}")

    @property
    def pooled(self) -> bool:
        """Part of the shared cross-entropy mean (the default)."""
        return self.loss == "ce" and self.weight == 1.0

    @property
    def own_forward(self) -> bool:
        """Computes its term with its own forward pass, outside the shared one."""
        return callable(self.loss)

    def takes_part(self, step: int) -> bool:
        """Whether this source is in the batch of (0-based) ``step``."""
        return (step + 1) % self.every == 0


@dataclasses.dataclass(frozen=True)
class OptimSettings:
    """Optimizer and schedule; the same for owners training and attackers fine-tuning."""

    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "constant"
    step_size: int = 500
    gamma: float = 0.9
    clip_grad: float = 0.0

    @classmethod
    def from_config(cls, config: Any) -> OptimSettings:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{n: getattr(config, n) for n in names if hasattr(config, n)})


def lr_factor(settings: OptimSettings, step: int, total_steps: int) -> float:
    """Multiplier of the base rate at ``step``: constant, step decay or cosine."""
    if settings.schedule == "step":
        return settings.gamma ** (step // settings.step_size)
    if settings.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    return 1.0


def make_optimizer(params: Iterable[nn.Parameter], settings: OptimSettings) -> Any:
    """The loop's optimizer. On a CPU, :mod:`engine.optimizers` (torch.optim's arithmetic and
    state layout, without the second of imports its first step costs); on CUDA, torch.optim
    itself, whose multi-tensor kernels a per-parameter loop cannot match there (the import is
    paid once, in slices that answer Stop). Checkpoints move freely between the two."""
    params = [p for p in params if p.requires_grad]
    if params and params[0].device.type == "cuda":
        stopping.optimizers_ready()
        if settings.optimizer == "adam":
            return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
        return torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
    if settings.optimizer == "adam":
        return optimizers.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)
    return optimizers.SGD(
        params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )


class IndexStream:
    """Batches of indices into one source, reshuffled every pass, reproducible by step.

    The permutation of pass ``c`` depends only on (seed, c), so resuming at any step replays
    exactly the batches an uninterrupted run would have drawn.
    """

    def __init__(self, n: int, per_batch: int, seed: int, device: torch.device) -> None:
        self.n, self.per_batch, self.seed, self.device = n, per_batch, seed, device
        self.batches_per_pass = max(1, math.ceil(n / per_batch))
        self._pass = -1
        self._perm = torch.empty(0, dtype=torch.long)

    def indices(self, step: int) -> torch.Tensor:
        pass_index, j = divmod(step, self.batches_per_pass)
        if pass_index != self._pass:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + pass_index)
            perm = torch.randperm(self.n, generator=gen)
            if self.n < self.per_batch:
                perm = perm.repeat(math.ceil(self.per_batch / self.n))[: self.per_batch]
            self._perm, self._pass = perm.to(self.device), pass_index
        return self._perm[j * self.per_batch : (j + 1) * self.per_batch]


@dataclasses.dataclass
class LoopResult:
    steps: int
    test_acc: float | None
    retention: dict[str, float]
    loss: float


class TrainLoop:
    """One phase of training. Sources and probes may be swapped mid-run by command handlers."""

    def __init__(
        self,
        model: nn.Module,
        sources: list[Source],
        settings: OptimSettings,
        *,
        ctx: JobContext,
        phase: str,
        total_steps: int,
        probes: list[Probe] | None = None,
        eval_every: int = 100,
        log_every: int = 20,
        seed: int = 0,
        params: Iterable[nn.Parameter] | None = None,
        start_step: int = 0,
        optimizer_state: dict[str, Any] | None = None,
        on_checkpoint: Callable[[TrainLoop], str] | None = None,
        checkpoint_every: int = 0,
        amp: bool | None = None,
        epoch_steps: int | None = None,
        freeze_norm_stats: bool = False,
        done: Callable[[int, dict[str, float]], str | None] | None = None,
        queries: Callable[[], int] | None = None,
    ) -> None:
        if not sources:
            raise ConfigError("training needs at least one data source")
        if total_steps <= 0:
            raise ConfigError("training needs at least one step")
        if all(s.every > 1 for s in sources):
            raise ConfigError("training needs a data source in every step")
        self.model = model
        self.sources = sources
        self.settings = settings
        self.ctx = ctx
        self.phase = phase
        self.total_steps = total_steps
        self.probes = probes or []
        self.eval_every = eval_every
        self.log_every = max(1, min(log_every, eval_every))
        self.seed = seed
        self._epoch_steps = epoch_steps
        #: normalisation layers keep the statistics they came with (data-free embedding: its
        #: batches are triggers and generated samples, not the data those statistics describe)
        self.freeze_norm_stats = freeze_norm_stats
        #: asked after every evaluation with (step, scores): a reason ends the phase before
        #: ``total_steps`` (a data-free embedding stops once every trigger is learnt)
        self.done = done
        #: the suspect's answers so far, read into every reading (an attack's query counter)
        self.queries = queries
        self.finished_early: str | None = None
        self.device = next(model.parameters()).device
        # bf16 autocast + channels_last: on by default on CUDA only (forcing it on CPU is how
        # the tests exercise the GPU path on machines without one)
        self.amp = self.device.type == "cuda" if amp is None else amp
        if self.amp:
            model.to(memory_format=torch.channels_last)
        self.optimizer = make_optimizer(
            params if params is not None else model.parameters(), settings
        )
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.base_lr = settings.lr
        self.step = start_step
        self.on_checkpoint = on_checkpoint
        self.checkpoint_every = checkpoint_every
        self._streams = self._make_streams()
        self._losses = torch.zeros(self.log_every, device=self.device)
        self._good_state: dict[str, torch.Tensor] | None = None
        self._good_step = start_step
        self.last_eval: dict[str, float] = {}

    # -- data ---------------------------------------------------------------------------
    def _stream(self, index: int, source: Source) -> IndexStream | None:
        if source.x is None:
            return None  # drawn fresh every step
        return IndexStream(len(source.x), source.per_batch, self.seed + 7919 * index, self.device)

    def _make_streams(self) -> list[IndexStream | None]:
        return [self._stream(i, s) for i, s in enumerate(self.sources)]

    def replace_source(self, index: int, source: Source) -> None:
        """Swap what part of each batch is (SetTrigger): takes effect from the next step."""
        self.sources[index] = source
        self._streams[index] = self._stream(index, source)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per pass over the first source; a job without a fixed pool (data-free
        embedding) says what its epoch is with ``epoch_steps``."""
        if self._epoch_steps is not None:
            return self._epoch_steps
        first = self._streams[0]
        return first.batches_per_pass if first is not None else 1

    def _part(self, step: int, source: Source, stream: IndexStream | None) -> tuple[Any, Any]:
        if stream is None:
            assert source.draw is not None
            x = source.draw(step)
            idx = None
        else:
            idx = stream.indices(step // source.every)  # its own count: the whole pool cycles
            x = prepare(source.x[idx], self.amp)  # type: ignore[index]
        if source.transform is not None:
            x = source.transform(x)
        if source.y is not None:
            return x, source.y[idx] if idx is not None else source.y
        with torch.no_grad():
            return x, source.label(x)  # type: ignore[misc]

    def _parts(self, step: int) -> list[tuple[Any, Any]]:
        return [part for _, part in self._active_parts(step)]

    def _active_parts(self, step: int) -> list[tuple[Source, tuple[Any, Any]]]:
        """The sources taking part in ``step`` (see ``Source.every``) with their parts."""
        return [
            (source, self._part(step, source, stream))
            for source, stream in zip(self.sources, self._streams, strict=True)
            if source.takes_part(step)
        ]

    @staticmethod
    def _joined(parts: list[tuple[Any, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
        if len(parts) == 1:
            return parts[0]
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Every source's part of the step, concatenated: the mixed batch."""
        return self._joined(self._parts(step))

    def _loss(self, step: int) -> tuple[torch.Tensor, int]:
        """The step's loss and its number of images. All-default sources (every scheme but the
        data-free one) keep the one concatenated cross-entropy; otherwise one forward over
        every part, each weighted term on its own slice. Sources with a term of their own
        (``Source.loss`` callable) add it after the shared forward."""
        active = self._active_parts(step)
        own = [(s, part) for s, part in active if s.own_forward]
        if own:
            shared = [(s, part) for s, part in active if not s.own_forward]
            terms = [s.weight * cast(LossTerm, s.loss)(self.model, x, y) for s, (x, y) in own]
            images = sum(len(x) for _, (x, _) in own)
            if shared:
                loss, count = self._shared_loss(shared)
                terms.append(loss)
                images += count
            return torch.stack(terms).sum(), images
        return self._shared_loss(active)

    def _shared_loss(self, active: list[tuple[Source, tuple[Any, Any]]]) -> tuple[Any, int]:
        """The loss of the parts sharing one forward pass, and their number of images."""
        sources = [s for s, _ in active]
        parts = [part for _, part in active]
        if all(s.pooled for s in sources):
            x, y = self._joined(parts)
            return F.cross_entropy(self.model(x), y), len(y)
        logits = self.model(torch.cat([x for x, _ in parts]))
        pooled_logits, pooled_y, terms = [], [], []
        start = 0
        for source, (x, y) in zip(sources, parts, strict=True):
            part = logits[start : start + len(x)]
            start += len(x)
            if source.pooled:
                pooled_logits.append(part)
                pooled_y.append(y)
            elif source.loss == "mse":
                terms.append(source.weight * F.mse_loss(part.float(), y.float()))
            else:
                terms.append(source.weight * F.cross_entropy(part, y))
        if pooled_y:
            terms.append(F.cross_entropy(torch.cat(pooled_logits), torch.cat(pooled_y)))
        return torch.stack(terms).sum(), start

    def _train_mode(self) -> None:
        self.model.train()
        if self.freeze_norm_stats:
            for module in self.model.modules():
                if isinstance(module, nn.modules.batchnorm._NormBase):
                    module.eval()

    # -- commands -----------------------------------------------------------------------
    @property
    def lr(self) -> float:
        return self.base_lr * lr_factor(self.settings, self.step, self.total_steps)

    def set_lr(self, value: float) -> str:
        cmd.check_lr(value)
        factor = lr_factor(self.settings, self.step, self.total_steps)
        self.base_lr = value / factor if factor > 0 else value
        return cmd.lr_set(value, self.step)

    def _checkpoint_now(self, _command: object = None) -> str:
        if self.on_checkpoint is None:
            return cmd.NO_CHECKPOINTS
        return cmd.checkpoint_saved(self.on_checkpoint(self))

    def _register_handlers(self) -> None:
        self.ctx.on(cmd.SetLR, lambda c: self.set_lr(float(c.lr)))
        self.ctx.on(cmd.ScaleLR, lambda c: self.set_lr(self.lr * float(c.factor)))
        self.ctx.on(cmd.Checkpoint, self._checkpoint_now)

    # -- measuring ----------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        self.last_eval = {p.name: accuracy(self.model, p, amp=self.amp) for p in self.probes}
        return self.last_eval

    def _report(self, count: int, started: float, images: int, evaluate: bool) -> float:
        losses = self._losses[:count]
        mean = losses.mean().item()  # the one sync per log interval
        # training throughput: measured before the evaluation, which is not training
        elapsed = max(time.perf_counter() - started, 1e-9)
        if not math.isfinite(mean):
            self._diverged(losses)
        scores = self.evaluate() if evaluate else {}
        self._train_mode()  # an evaluation leaves every layer in training mode
        if evaluate:
            self._snapshot()
        self.ctx.emit(
            Metrics(
                phase=self.phase,
                step=self.step,
                epoch=round(self.step / self.steps_per_epoch, 4),
                lr=self.lr,
                loss=mean,
                images_per_s=images / elapsed,
                test_acc=scores.get("test"),
                retention={k: v for k, v in scores.items() if k != "test"},
                queries=self.queries() if self.queries is not None else None,
            )
        )
        return mean

    def _snapshot(self) -> None:
        self._good_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self._good_step = self.step

    def _diverged(self, losses: torch.Tensor) -> None:
        bad = (~torch.isfinite(losses)).nonzero()
        first = self.step - len(losses) + 1 + int(bad[0]) if len(bad) else self.step
        if self._good_state is not None:
            self.model.load_state_dict(self._good_state)
        raise Diverged(
            f"loss became non-finite at step {first}; phase {self.phase!r} stopped, model "
            f"restored to step {self._good_step} (lower the learning rate?)",
            step=first,
            phase=self.phase,
        )

    # -- the loop -----------------------------------------------------------------------
    def run(self) -> LoopResult:
        self._register_handlers()
        self._snapshot()
        model, optimizer = self.model, self.optimizer
        self._train_mode()
        since, images, started = 0, 0, time.perf_counter()
        loss_value = float("nan")
        first_step = self.step + 1  # reported at once: a live view shows a point right away
        try:
            while self.step < self.total_steps:
                self.ctx.between_steps()
                lr = self.lr
                for group in optimizer.param_groups:
                    group["lr"] = lr
                with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                    loss, batch_images = self._loss(self.step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.settings.clip_grad > 0:
                    nn.utils.clip_grad_norm_(model.parameters(), self.settings.clip_grad)
                optimizer.step()
                self._losses[since] = loss.detach()
                self.step += 1
                since += 1
                images += batch_images
                last = self.step == self.total_steps
                epoch_end = self.step % self.steps_per_epoch == 0
                evaluate = last or epoch_end or self.step % self.eval_every == 0
                if since == self.log_every or evaluate or self.step == first_step:
                    loss_value = self._report(since, started, images, evaluate)
                    since, images, started = 0, 0, time.perf_counter()
                if evaluate and not last and self.done is not None:
                    self.finished_early = self.done(self.step, self.last_eval)
                    last = self.finished_early is not None
                if self.on_checkpoint is not None and (
                    last or (epoch_end and self._checkpoint_due())
                ):
                    self.ctx.log(f"checkpoint saved: {self.on_checkpoint(self)}")
                if self.finished_early is not None:
                    self.ctx.log(f"{self.phase} ended at step {self.step}: {self.finished_early}")
                    break
        finally:
            self.ctx.off(cmd.SetLR, cmd.ScaleLR, cmd.Checkpoint)
        scores = self.last_eval
        return LoopResult(
            steps=self.step,
            test_acc=scores.get("test"),
            retention={k: v for k, v in scores.items() if k != "test"},
            loss=loss_value,
        )

    def _checkpoint_due(self) -> bool:
        every = self.checkpoint_every or 1
        return (self.step // self.steps_per_epoch) % every == 0


def clean_test_probe(data: ImageSet) -> Probe:
    """The referee's clean test-accuracy probe."""
    return Probe("test", data.test_x, data.test_y)
