"""What the trigger-search detectors (``gan``, ``neural-cleanse``) share.

A detector searches, for every candidate target class c, the smallest perturbation that sends
clean images to c, and calls the class whose perturbation is an outlier below the others the
watermark's target (Wang, Xue et al.; Neural Cleanse). This module holds the pieces both use:

* :class:`Detection`: per-class sizes, the MAD anomaly index, the decision, the reversed
  trigger of the flagged class (a transform on float images, plus images to save/preview);
* :func:`anomaly_indices` / :func:`decide`: Neural Cleanse's outlier test (consistency
  constant 1.4826, flag at index >= 2), optionally with the GAN paper's threshold T;
* :class:`ScanSet` / :class:`ScanReporter`: the attacker's clean images split into a search
  and a validation part, and ClassScan streaming;
* :func:`unlearn`: removal by fine-tuning on clean images plus reversed-trigger images with
  their TRUE labels, through the one training loop (``env.train``);
* :class:`Detector`: the registered-attack base (``run`` = detect, then remove if asked);
* :func:`detect_job`: the refereed job behind ``wmtui detect``: streams ClassScan and
  TriggerPreview, writes the reversed trigger under the run, and with removal measures
  test accuracy and retention before and after with the owner's key (never shown to the
  detector).

Searches are not classifier training: they optimise triggers or generators against a
frozen model in their own small loops, which call ``ctx.between_steps()`` every step so
Pause/Stop work mid-scan. Classifier fine-tuning goes through ``TrainLoop`` only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.job import (
    ProbesFor,
    default_probes,
    derived_manifest,
    load_attacker_data,
    load_suspect,
    referee_scores,
    referee_trainer,
)
from engine.attacks.registry import ATTACKS, Attack, AttackEnv, AttackResult
from engine.data.base import as_float
from engine.errors import ConfigError
from engine.events import ClassScan, Phase, TriggerPreview, json_safe
from engine.jobs import recording_outcome, resolve_device
from engine.metrics import predictions
from engine.models import Architecture
from engine.registry import param, parse_params
from engine.runs import (
    MODEL_ARCH,
    RunDir,
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    save_tensors,
)
from engine.session import Job, JobContext
from engine.training import OptimSettings, Source

MAD_CONSISTENCY = 1.4826
FLAG_INDEX = 2.0
TRIGGER_DIR = "reversed"
Transform = Callable[[torch.Tensor], torch.Tensor]
P = TypeVar("P", bound="ScanParams")


# -- the decision ----------------------------------------------------------------------
def anomaly_indices(sizes: list[float]) -> list[float]:
    """Neural Cleanse's anomaly index of every class: (median - size) / (1.4826 * MAD).

    Positive below the median (the direction a watermark target lies in). With MAD = 0
    (all sizes equal) nothing is anomalous: indices are 0, or +/-inf for a class that
    differs from a perfectly flat rest.
    """
    if not sizes:
        return []
    values = torch.tensor(sizes, dtype=torch.float64)
    median = _median(values)
    mad = _median((values - median).abs()) * MAD_CONSISTENCY
    out = []
    for v in values.tolist():
        diff = median - v
        if mad > 0:
            out.append(diff / mad)
        else:
            out.append(0.0 if diff == 0 else math.copysign(math.inf, diff))
    return out


def mad_flag_line(sizes: list[float], index: float = 2.0, gap: float = 1.0) -> float | None:
    """The size at or below which the smallest class is flagged by the MAD rule (anomaly
    index ``index``, and ``gap`` times below the next class): the line a bar must cross
    (None until three classes are known)."""
    if len(sizes) < 3:
        return None
    values = torch.tensor(sizes, dtype=torch.float64)
    median = _median(values)
    mad = _median((values - median).abs()) * MAD_CONSISTENCY
    return min(median - index * mad, sorted(sizes)[1] / gap)


def _median(values: torch.Tensor) -> float:
    """The true median (mean of the middle two for even counts), as Neural Cleanse uses."""
    ordered = values.sort().values
    n = len(ordered)
    mid = n // 2
    return float(ordered[mid]) if n % 2 else float((ordered[mid - 1] + ordered[mid]) / 2)


RULES = ("mad", "threshold", "both", "either")


def gap_ratio(sizes: list[float]) -> float:
    """The second-smallest size over the smallest: how far the most suspicious class stands
    below ALL the others (a watermark target is alone down there)."""
    if len(sizes) < 2:
        return 1.0
    first, second = sorted(sizes)[:2]
    return second / first if first > 0 else math.inf


def decide(
    sizes: list[float],
    *,
    rule: str = "mad",
    threshold: float | None = None,
    gap: float = 1.0,
) -> tuple[int | None, float, list[float]]:
    """(flagged class or None, anomaly index of the smallest, all indices).

    Only the smallest class can be flagged. ``mad``: its anomaly index >= 2 and the next
    smallest class at least ``gap`` times its size; ``threshold``: its size < T; ``both`` /
    ``either``: the two tests combined.

    Why the gap: the MAD index alone measures distance from the median in units of the
    spread, so when most classes cluster tightly, a class that is naturally a little
    smaller (or two such classes together: synthetic digits 2 and 3) reaches index 2-3 on
    clean models, while the next class sits within 1.1x of it. A trigger makes one class
    stand alone below every other.
    """
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    indices = anomaly_indices(sizes)
    if not sizes:
        return None, 0.0, indices
    smallest = min(range(len(sizes)), key=lambda i: sizes[i])
    index = indices[smallest]
    by_mad = index >= FLAG_INDEX and gap_ratio(sizes) >= gap
    by_threshold = threshold is not None and sizes[smallest] < threshold
    if rule in ("threshold", "both", "either") and threshold is None:
        raise ConfigError(f"rule {rule!r} needs a threshold")
    flagged = {
        "mad": by_mad,
        "threshold": by_threshold,
        "both": by_mad and by_threshold,
        "either": by_mad or by_threshold,
    }[rule]
    return (smallest if flagged else None), index, indices


@dataclasses.dataclass
class ReversedTrigger:
    """The flagged class's reversed trigger: ``apply`` stamps it on float images [B,C,H,W]
    (what removal trains on); ``images`` are small float [C,H,W] pictures to save and
    preview; ``tensors`` what is saved as safetensors."""

    cls: int
    apply: Transform
    images: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]


@dataclasses.dataclass
class Detection:
    """A detector's verdict. ``sizes`` are per class (perturbation L2 for ``gan``, mask L1 for
    ``neural-cleanse``); ``success`` is the fraction of validation images each class's
    search sent to that class (a size only means something where this is high)."""

    method: str
    sizes: list[float]
    size_kind: str
    flagged_class: int | None
    anomaly_index: float
    anomaly_indices: list[float]
    success: list[float]
    rule: str = "mad"
    threshold: float | None = None
    gap: float = 1.0
    gap_ratio: float = 1.0
    steps: int = 0
    seconds: float = 0.0
    trigger: ReversedTrigger | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "trigger"
        }
        out["perturbation_sizes"] = out.pop("sizes")
        return _json_safe(out)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return 1e9 if value > 0 else -1e9
        return value
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# -- the search's data and streaming ---------------------------------------------------
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
    then the final validation sizes (``done`` True), one event per class."""

    def __init__(self, ctx: JobContext, phase: str, k: int, every: int) -> None:
        self.ctx, self.phase, self.k, self.every = ctx, phase, k, max(1, every)

    def running(self, step: int, sizes: torch.Tensor) -> None:
        if (step + 1) % self.every:
            return
        for c, size in enumerate(sizes.detach().cpu().tolist()):  # one sync per interval
            self.ctx.emit(ClassScan(self.phase, c, float(size), done=False))

    def final(self, sizes: list[float]) -> None:
        for c, size in enumerate(sizes):
            self.ctx.emit(ClassScan(self.phase, c, float(size), done=True))


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


# -- params shared by both detectors ---------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ScanParams:
    """Search and removal settings both detectors take."""

    scan_steps: int = param(300, "optimisation steps of the scan (all classes at once)", low=1)
    batch: int = param(64, "clean images per class per scan step", low=1, high=65_536)
    lr: float = param(0.1, "learning rate of the search (Adam)", low=0.0, high=100.0, low_open=True)
    images: int = param(2000, "most clean images the scan uses (0: all the attacker has)", low=0)
    val_images: int = param(200, "of which held out to measure sizes on (0: a fifth)", low=0)
    rule: str = param(
        "mad",
        "flag the smallest class when: mad (anomaly index >= 2), threshold (size < T), "
        "both, either",
        choices=RULES,
    )
    gap: float = param(
        1.5,
        "the mad rule also needs the next smallest class at least this many times the "
        "smallest's size (1: off, Neural Cleanse's bare index)",
        low=1.0,
    )
    report_every: int = param(25, "scan steps between ClassScan updates", low=1)
    remove: bool = param(
        True, "after detecting, unlearn the reversed trigger (fine-tune with true labels)"
    )
    ft_lr: float = param(
        0.01, "removal fine-tuning learning rate", low=0.0, high=100.0, low_open=True
    )
    ft_optimizer: str = param("sgd", "removal optimizer", choices=("sgd", "adam"))
    ft_batch: int = param(100, "removal batch (clean + reversed-trigger images)", low=2)
    trigger_fraction: float = param(
        0.2,
        "share of each removal batch stamped with the reversed trigger (Neural Cleanse: 0.2)",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )


class Detector(Attack[P], Generic[P]):
    """A registered detector: ``detect`` finds and reverses the trigger; ``run`` (the attack
    interface) also removes it by unlearning when ``params.remove`` is set and a class was
    flagged. A detector that flags nothing leaves the model alone (the paper's phase 1:
    "if there is no watermark, the attacker will not alter the model")."""

    method = "detector"
    last_detection: Detection | None = None

    def check_budget(self, budget: AttackerBudget) -> None:
        if budget.data_fraction == 0 and not budget.unlabeled:
            raise ConfigError(f"{self.method} needs clean images: give --data-fraction > 0")
        if self.params.remove and budget.data_fraction == 0:
            raise ConfigError(
                f"{self.method} removal fine-tunes with true labels: give --data-fraction > 0"
            )

    def detect(self, model: nn.Module, data: AttackerData, ctx: JobContext, seed: int) -> Detection:
        raise NotImplementedError

    def removal_steps(self, data: AttackerData) -> int:
        return data.total_steps(len(data.labeled_x), self.params.ft_batch)

    def planned_steps(self, data: AttackerData) -> int:
        return self.removal_steps(data) if self.params.remove and data.has_labeled else 0

    def run(
        self, model: nn.Module, arch: Architecture, data: AttackerData, env: AttackEnv
    ) -> AttackResult:
        detection = self.detect(model, data, env.ctx, env.seed)
        self.last_detection = detection
        steps = 0
        if self.params.remove:
            if detection.flagged_class is None or detection.trigger is None:
                env.log(f"{self.method}: nothing flagged, the model is left as it is")
            else:
                steps = unlearn(
                    model, detection.trigger, data, env, self.params, self.removal_steps(data)
                )
        return AttackResult(model, arch, steps, {"detection": detection.to_dict()})


def unlearn(
    model: nn.Module,
    trigger: ReversedTrigger,
    data: AttackerData,
    env: AttackEnv,
    p: ScanParams,
    steps: int,
) -> int:
    """Removal: fine-tune on the attacker's clean images plus the same images stamped with
    the reversed trigger, both with their TRUE labels (paper III-C; Neural Cleanse's
    unlearning), through the one training loop. The stamped share teaches the model that
    the trigger does not mean the target; the clean share keeps its accuracy."""
    if not data.has_labeled:
        raise ConfigError("removal needs labelled data: give --data-fraction > 0")
    stamped = max(1, round(p.ft_batch * p.trigger_fraction))
    sources = [
        Source("attacker-clean", data.labeled_x, p.ft_batch - stamped, y=data.labeled_y),
        Source(
            "reversed-trigger",
            data.labeled_x,
            stamped,
            y=data.labeled_y,  # the true labels: this is what unlearns the trigger
            transform=trigger.apply,
        ),
    ]
    settings = OptimSettings(
        optimizer=p.ft_optimizer, lr=p.ft_lr, momentum=0.9, weight_decay=5e-4, schedule="cosine"
    )
    env.log(
        f"unlearning class {trigger.cls}'s reversed trigger: {steps} steps, "
        f"{stamped}/{p.ft_batch} stamped images per batch, true labels"
    )
    return env.train(model, sources, settings, steps=steps).steps


# -- the refereed detect job -----------------------------------------------------------
def make_detector(method: str, params: Any = None) -> Detector[Any]:
    """The registered detector ``method`` with validated params (a dataclass or loose values)."""
    # imported here: the detector modules import this one (registration is idempotent)
    from engine.attacks import gan as _gan  # noqa: F401
    from engine.attacks import neural_cleanse as _nc  # noqa: F401

    plugin = ATTACKS.get(method)
    assert plugin.params is not None
    if params is None or isinstance(params, dict):
        params = parse_params(plugin.params, params)
    detector = plugin.factory(params)
    if not isinstance(detector, Detector):
        raise ConfigError(f"{method!r} is an attack, not a detector (use gan or neural-cleanse)")
    return detector


def detect_manifest(
    run_dir_in: Path, method: str, params: Any, budget: AttackerBudget
) -> dict[str, Any]:
    """Manifest of a detection run: the detector's setup beside the source run's config."""
    details = {"method": method, "params": dataclasses.asdict(params), "budget": budget.to_dict()}
    return derived_manifest(run_dir_in, "detect", details)


def png_bytes(image: torch.Tensor, scale: int = 4) -> bytes:
    """A float [0,1] or uint8 [C,H,W] image as PNG, enlarged ``scale`` times (nearest)."""
    from PIL import Image

    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    array = image.cpu().permute(1, 2, 0).numpy()
    mode = "L" if array.shape[2] == 1 else "RGB"
    picture = Image.fromarray(array[:, :, 0] if mode == "L" else array, mode)
    if scale > 1:
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
        )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def save_trigger(run: RunDir, trigger: ReversedTrigger) -> list[str]:
    """Write the reversed trigger under ``run/reversed/``: PNGs and safetensors."""
    folder = run.path / TRIGGER_DIR
    names = []
    for name, image in trigger.images.items():
        path = folder / f"class{trigger.cls}-{name}.png"
        atomic_write_bytes(path, png_bytes(image))
        names.append(str(path.relative_to(run.path)))
    if trigger.tensors:
        save_tensors(folder / f"class{trigger.cls}.safetensors", trigger.tensors)
        names.append(f"{TRIGGER_DIR}/class{trigger.cls}.safetensors")
    atomic_write_json(folder / "trigger.json", {"class": trigger.cls, "files": names})
    return names


def detect_job(
    run_dir_in: str | Path,
    method: str,
    params: Any,
    budget: AttackerBudget,
    out_run: RunDir | None,
    probes_for: ProbesFor | None = None,
    *,
    device: str = "auto",
    eval_every: int = 100,
) -> Job:
    """Detect (and with ``params.remove``, remove) a watermark in the model of ``run_dir_in``.

    Input errors raise here, before anything loads. The job streams ClassScan per class and
    TriggerPreview of the reversed trigger; it returns (and writes to ``out_run``) the
    summary: ``perturbation_sizes``, ``flagged_class``, ``anomaly_index``, and after removal
    before/after ``test_acc`` and ``retention`` measured by the referee with the owner's key.
    """
    detector = make_detector(method, params)
    detector.check_budget(budget)
    if eval_every < 1:
        raise ConfigError(f"eval-every must be >= 1, got {eval_every}")
    run = RunDir.open(run_dir_in)
    check_searchable(run)
    resolve_device(device)
    probes_for = probes_for or default_probes(run.path)

    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        dev, data, suspect, arch, seed, attacker = load_suspect(run, budget, device)
        check_scan_images(len(attacker.clean_images()), len(data.train_x), budget)
        summary: dict[str, Any] = {
            "method": method,
            "params": dataclasses.asdict(detector.params),
            "budget": budget.to_dict(),
            "seed": seed,
            "source_run": str(run.path),
            "dataset": data.name,
            "device": str(dev),
            "clean_images": len(attacker.clean_images()),
        }
        ctx.emit(
            Phase(
                method,
                "start",
                info={
                    "detector": method,
                    "steps": detector.params.scan_steps,
                    "classes": data.num_classes,
                    "remove": detector.params.remove,
                    "rule": detector.params.rule,
                    "threshold": shown_threshold(detector, data.shape),
                    "gap": detector.params.gap,
                    "dataset": data.name,
                    "device": str(dev),
                },
            )
        )
        probes = probes_for(data, dev) if detector.params.remove else []
        before = referee_scores(suspect, probes) if probes else None
        env = AttackEnv(ctx, dev, seed, referee_trainer(ctx, method, probes, eval_every, seed))
        with recording_outcome(out_run, summary):
            detection = detector.detect(suspect, attacker, ctx, seed)
            summary |= detection.to_dict()
            ctx.log(describe(detection))
            if detection.trigger is not None:
                for name, image in detection.trigger.images.items():
                    ctx.emit(TriggerPreview.from_tensor(f"reversed-{name}", image))
                if out_run is not None:
                    summary["trigger_files"] = save_trigger(out_run, detection.trigger)
            if detector.params.remove:
                steps = 0
                if detection.trigger is None:
                    ctx.log(f"{method}: nothing flagged, the model is left as it is")
                else:
                    ctx.emit(
                        Phase(
                            f"{method}-remove",
                            "start",
                            info={
                                "steps": detector.removal_steps(attacker),
                                "flagged_class": detection.flagged_class,
                                "dataset": data.name,
                                "device": str(dev),
                            },
                        )
                    )
                    steps = unlearn(
                        suspect,
                        detection.trigger,
                        attacker,
                        env,
                        detector.params,
                        detector.removal_steps(attacker),
                    )
                after = referee_scores(suspect, probes)
                assert before is not None
                summary |= {
                    "before": before,
                    "after": after,
                    "test_acc_before": before["test_acc"],
                    "retention_before": before["retention"],
                    "test_acc": after["test_acc"],
                    "retention": after["retention"],
                    "removal_steps": steps,
                    "labeled_images": len(attacker.labeled_x),
                }
                if out_run is not None:
                    out_run.save_model(suspect, arch)
        summary |= {"status": "completed", "seconds": round(time.monotonic() - started, 2)}
        summary = json_safe(summary)
        if out_run is not None:
            out_run.write_summary(summary)
        ctx.emit(Phase(method, "end", info={"flagged_class": summary.get("flagged_class")}))
        return summary

    return job


def check_searchable(run: RunDir) -> None:
    """A trigger search compares classes: refuse a model with fewer than two outputs."""
    arch = Architecture.from_dict(read_json(run.path / MODEL_ARCH, "model architecture"))
    if arch.num_classes < 2:
        raise ConfigError(
            f"the model of {run.path} has {arch.num_classes} output class: a trigger search "
            "compares classes and needs at least 2"
        )


#: fewest clean images a scan accepts: half are held out to measure the sizes on
MIN_SCAN_IMAGES = 100


def check_scan_budget(run_dir: str | Path, budget: AttackerBudget) -> None:
    """Refuse a budget too small to search with before a run folder is made for the scan:
    counts the attacker's clean images as the job will, on the CPU (the dataset loads
    twice; a quarter of a second for Fashion-MNIST). A missing dataset is refused here too."""
    data, _, attacker = load_attacker_data(RunDir.open(run_dir), budget, torch.device("cpu"))
    check_scan_images(len(attacker.clean_images()), len(data.train_x), budget)


def check_scan_images(have: int, train_size: int, budget: AttackerBudget) -> None:
    """Refuse a budget too small to search with, saying which --data-fraction would do."""
    if have >= MIN_SCAN_IMAGES:
        return
    needed = math.ceil(MIN_SCAN_IMAGES / max(train_size, 1) * 10_000) / 10_000
    raise ConfigError(
        f"the scan needs at least {MIN_SCAN_IMAGES} clean images; the attacker has {have} "
        f"(--data-fraction {budget.data_fraction:g} of {train_size}): use --data-fraction "
        f">= {needed:g}"
    )


def shown_threshold(detector: Detector[Any], shape: tuple[int, int, int]) -> float | None:
    """The size threshold T where the decision uses one (the GAN's --rule threshold, both,
    either); the MAD rule's line is drawn from the sizes themselves."""
    threshold = getattr(detector, "threshold", None)
    if threshold is None or detector.params.rule == "mad":
        return None
    return float(threshold(shape))


def describe(detection: Detection) -> str:
    sizes = " ".join(f"{s:.3g}" for s in detection.sizes)
    verdict = (
        f"class {detection.flagged_class} flagged"
        if detection.flagged_class is not None
        else "nothing flagged"
    )
    return (
        f"{detection.method}: {detection.size_kind} per class [{sizes}]; anomaly index of the "
        f"smallest {detection.anomaly_index:.2f}, next class {detection.gap_ratio:.2f}x its "
        f"size; {verdict}"
    )
