"""What the trigger-search detectors (``gan``, ``neural-cleanse``) are: the verdict, the
detector base, and removal by unlearning.

A detector searches, for every candidate target class c, the smallest perturbation that sends
clean images to c, and calls the class whose perturbation is an outlier below the others the
watermark's target (Wang, Xue et al.; Neural Cleanse). The search toolkit is in
:mod:`engine.attacks.scan`, the outlier statistics in :mod:`engine.metrics`, the refereed job
in :mod:`engine.jobs.detect`. Here:

* :class:`Detection`: per-class sizes, the MAD anomaly index, the decision, the reversed
  trigger of the flagged class (a transform on float images, plus images to save/preview);
* :class:`ScanParams`: the search and removal settings every detector takes;
* :class:`Detector`: the registered-plugin base (``run`` = detect, then remove if asked);
* :func:`unlearn`: removal by fine-tuning on clean images plus reversed-trigger images with
  their TRUE labels, through the one training loop (``env.train``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.registry import Attack, AttackEnv, AttackResult
from engine.errors import ConfigError
from engine.events import json_safe
from engine.metrics import RULES
from engine.models import Architecture
from engine.registry import param
from engine.session import JobContext
from engine.training import OptimSettings, Source

Transform = Callable[[torch.Tensor], torch.Tensor]
P = TypeVar("P", bound="ScanParams")


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
        return json_safe(out)


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
    report_every: int = param(
        25, "scan steps between ClassScan updates (a slow scan also reports every 5 s)", low=1
    )
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
