"""What the attacker holds: an explicit, seeded budget of data, queries and training time.

Removal results only mean something next to the budget that achieved them (REFIT's Tables 2
and 3 are indexed by the labelled fraction), so the budget is a first-class, recorded object:
a labelled fraction of the owner's training set drawn with :func:`make_splits`, an optional
unlabelled source the attacker may have the suspect model label, and a step or epoch count.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.data import DATASETS, ImageSet, load_dataset, make_splits
from engine.errors import ConfigError
from engine.registry import param, parse_params
from engine.training import Source

#: ``--unlabeled noise``: uniform random images, the transfer set of a thief with no data
NOISE = "noise"
#: images a noise transfer set holds unless ``--unlabeled-count`` or ``--queries`` says
NOISE_DEFAULT_COUNT = 10_000
#: ``--answers``: the suspect's class probabilities (an API returning scores), or its top-1
#: label alone (an API returning a class)
ANSWER_KINDS = ("probs", "labels")


@dataclasses.dataclass(frozen=True)
class AttackerBudget:
    """The attacker's resources. Never includes the owner's key."""

    data_fraction: float = param(
        0.2, "labelled fraction of the owner's training set the attacker holds", low=0.0, high=1.0
    )
    unlabeled: str = param(
        "",
        "the transfer set the suspect model labels for the attacker: a dataset, folder:PATH, "
        "synthetic or noise (empty: none)",
    )
    unlabeled_count: int = param(
        0, f"images taken from --unlabeled (0: all; noise: {NOISE_DEFAULT_COUNT})", low=0
    )
    epochs: int = param(
        10,
        "passes over the attacker's main data source (used when --steps is 0)",
        low=1,
        high=10_000,
    )
    steps: int = param(0, "optimizer steps (0: use --epochs)", low=0)
    queries: int = param(0, "most answers the suspect model gives the attacker (0: no cap)", low=0)
    answers: str = param(
        "probs",
        "what the suspect answers each query with: its class probabilities, or its top label only",
        choices=ANSWER_KINDS,
    )
    seed: int = param(
        -1,
        "seed of the attacker's split, data order and re-initialisation (-1: the run's)",
        low=-1,
        high=2**32 - 1,
    )

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None = None) -> AttackerBudget:
        """Validated from loose values (CLI strings, TOML); unknown datasets suggest a name."""
        budget = parse_params(cls, values)
        if "queries" in (values or {}) and budget.queries == 0:
            raise ConfigError("queries must be > 0: leave it out for no cap")
        if budget.unlabeled and budget.unlabeled != NOISE:
            DATASETS.get(budget.unlabeled)
        return budget

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def unlabeled_limit(self) -> int:
        """How many unlabelled images may be used: the smaller non-zero of count and queries."""
        caps = [n for n in (self.unlabeled_count, self.queries) if n > 0]
        return min(caps) if caps else 0


@dataclasses.dataclass
class AttackerData:
    """The attacker's images on the device, in the suspect model's input shape."""

    budget: AttackerBudget
    labeled_x: torch.Tensor
    labeled_y: torch.Tensor
    unlabeled_x: torch.Tensor
    shape: tuple[int, int, int]
    num_classes: int
    seed: int
    unlabeled_name: str = ""
    #: which of the attacker's sets the attack drew on: "labeled" (images with their true
    #: labels), "labeled-images" (the labelled set's images alone: statistics, or labels the
    #: suspect gave), "unlabeled". The cost counts only those, so a weight-only attack reports
    #: no images and one that asks the suspect for labels reports no true labels
    used: set[str] = dataclasses.field(default_factory=set)
    #: of a set in ``used``, how many of its images the attack drew on when not all (a
    #: query cap answered fewer, a seed set took the first 150)
    drawn: dict[str, int] = dataclasses.field(default_factory=dict)

    def images_used(self) -> tuple[int, int]:
        """``(images, labels)`` the attack used: its labelled and unlabelled images, and the
        true labels among them."""
        labels = len(self.labeled_x) if "labeled" in self.used else 0
        images = len(self.labeled_x) if self.used & {"labeled", "labeled-images"} else 0
        if "labeled" not in self.used and "labeled-images" in self.drawn:
            images = min(images, self.drawn["labeled-images"])
        unlabeled = len(self.unlabeled_x) if "unlabeled" in self.used else 0
        unlabeled = min(unlabeled, self.drawn.get("unlabeled", unlabeled))
        return images + unlabeled, labels

    @property
    def has_labeled(self) -> bool:
        return len(self.labeled_x) > 0

    @property
    def has_unlabeled(self) -> bool:
        return len(self.unlabeled_x) > 0

    def total_steps(self, n_images: int, per_batch: int) -> int:
        """``--steps`` if given, else ``--epochs`` passes over ``n_images`` at ``per_batch``."""
        if self.budget.steps > 0:
            return self.budget.steps
        return self.budget.epochs * max(1, math.ceil(n_images / per_batch))

    def labeled_source(self, per_batch: int) -> Source:
        if not self.has_labeled:
            raise ConfigError("this attack needs labelled data: give --data-fraction > 0")
        self.used.add("labeled")
        return Source("attacker-labeled", self.labeled_x, per_batch, y=self.labeled_y)

    def unlabeled_source(self, per_batch: int, label: Any) -> Source:
        """Unlabelled images whose targets ``label(x)`` computes (pseudo-labels, soft outputs)."""
        if not self.has_unlabeled:
            raise ConfigError("this attack needs unlabelled data: give --unlabeled DATASET")
        self.used.add("unlabeled")
        return Source("attacker-unlabeled", self.unlabeled_x, per_batch, label=label)

    def transfer_images(self, count: int | None = None) -> torch.Tensor:
        """The images a thief has the suspect answer (the first ``count`` of them, all by
        default): the ``--unlabeled`` transfer set when given, else the labelled fraction's
        images, whose true labels stay unused. The cost counts only those returned."""
        for kind, images in (("unlabeled", self.unlabeled_x), ("labeled-images", self.labeled_x)):
            if len(images):
                self.used.add(kind)
                chosen = images if count is None else images[:count]
                self.drawn[kind] = len(chosen)  # the last call says what was drawn on
                return chosen
        raise ConfigError(
            "this attack needs images to query the suspect with: give --unlabeled SOURCE "
            "or --data-fraction > 0"
        )

    def clean_images(self) -> torch.Tensor:
        """Clean images for statistics (activations for pruning): labelled, else unlabelled."""
        if self.has_labeled:
            self.used.add("labeled-images")
            return self.labeled_x
        if self.has_unlabeled:
            self.used.add("unlabeled")
            return self.unlabeled_x
        raise ConfigError("this attack needs clean data: give --data-fraction > 0 or --unlabeled")


def fit_images(x: torch.Tensor, shape: tuple[int, int, int], chunk: int = 4096) -> torch.Tensor:
    """uint8 [N,C,H,W] -> uint8 in ``shape``: grey<->RGB, then resize (area down, bilinear up).

    An out-of-distribution unlabelled source (32x32 RGB against 28x28 grey) must reach the
    suspect model in its input shape; done once, in chunks, so 100k images fit in memory.
    """
    c, h, w = shape
    if tuple(x.shape[1:]) == (c, h, w) or len(x) == 0:
        return x if len(x) else x.new_zeros((0, c, h, w))
    if x.shape[1] not in (1, 3) or c not in (1, 3):
        raise ConfigError(f"cannot convert {x.shape[1]}-channel images to {c} channels")
    out = []
    grey = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].float()
        if part.shape[1] == 1 and c == 3:
            part = part.expand(-1, 3, -1, -1)
        elif part.shape[1] == 3 and c == 1:
            part = (part * grey).sum(1, keepdim=True)
        if part.shape[2:] != (h, w):
            smaller = h <= part.shape[2] and w <= part.shape[3]
            part = (
                F.interpolate(part, size=(h, w), mode="area")
                if smaller
                else F.interpolate(part, size=(h, w), mode="bilinear", align_corners=False)
            )
        out.append(part.round().clamp(0, 255).to(torch.uint8))
    return torch.cat(out)


def noise_images(count: int, data: ImageSet, seed: int) -> torch.Tensor:
    """``count`` uniform random uint8 images in the suspect's input shape, seeded: the
    transfer set of a thief with no natural data (Knockoff Nets' weakest baseline)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + 17)
    images = torch.randint(0, 256, (count, *data.shape), generator=gen, dtype=torch.uint8)
    return images.to(data.device)


def build_attacker_data(
    budget: AttackerBudget,
    data: ImageSet,
    *,
    seed: int,
    data_dir: str | Path | None = None,
) -> AttackerData:
    """Draw the labelled fraction (seeded, as :func:`make_splits` does) and load the
    unlabelled source onto the same device.

    With the run's seed the attacker's images are the tail of the same permutation whose head
    holds key samples, so the two are disjoint whenever they fit in the training set.
    """
    splits = make_splits(len(data.train_x), seed, attacker_fraction=budget.data_fraction)
    idx = splits.attacker.to(data.device)
    unlabeled = data.train_x.new_zeros((0, *data.shape))
    if budget.unlabeled == NOISE:
        unlabeled = noise_images(budget.unlabeled_limit or NOISE_DEFAULT_COUNT, data, seed)
    elif budget.unlabeled:
        limit = budget.unlabeled_limit
        loaded = load_dataset(
            budget.unlabeled, data_dir or None, device=data.device, train_size=limit, test_size=1
        ).data
        source = loaded.train_x[:limit] if limit else loaded.train_x
        unlabeled = fit_images(source, data.shape)
    return AttackerData(
        budget=budget,
        labeled_x=data.train_x[idx],
        labeled_y=data.train_y[idx],
        unlabeled_x=unlabeled,
        shape=data.shape,
        num_classes=data.num_classes,
        seed=seed,
        unlabeled_name=budget.unlabeled,
    )
