"""Seeded, explicit splits of the training set into the roles of an experiment.

Owner and attacker data are drawn from one seeded permutation so the same seed always gives
the same split, and the roles never overlap unless a caller asks for it.
"""

from __future__ import annotations

import dataclasses

import torch

from engine.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Splits:
    """Index tensors into ``train_x``: who may use which images."""

    owner: torch.Tensor
    attacker: torch.Tensor
    unlabeled: torch.Tensor
    key: torch.Tensor


def make_splits(
    n_train: int,
    seed: int,
    *,
    attacker_fraction: float = 0.0,
    unlabeled_fraction: float = 0.0,
    key_fraction: float = 0.0,
    attacker_overlaps_owner: bool = True,
) -> Splits:
    """Cut one seeded permutation into key, attacker and unlabeled parts.

    Key samples come from the owner's data. The attacker's labelled fraction is by default a
    sample of the owner's training set, as in REFIT (the adversary holds some of the same
    data); with ``attacker_overlaps_owner=False`` it is held out of the owner's set instead.
    The unlabeled pool is always held out of everything else.
    """
    for label, value in (
        ("attacker fraction", attacker_fraction),
        ("unlabeled fraction", unlabeled_fraction),
        ("key fraction", key_fraction),
    ):
        if not 0.0 <= value <= 1.0:
            raise ConfigError(f"{label} must be in [0, 1], got {value}")
    if attacker_fraction + unlabeled_fraction > 1.0:
        raise ConfigError("attacker and unlabeled fractions add up to more than the training set")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n_train, generator=gen)
    n_unlabeled = round(unlabeled_fraction * n_train)
    n_attacker = round(attacker_fraction * n_train)
    unlabeled = perm[n_train - n_unlabeled :]
    pool = perm[: n_train - n_unlabeled]
    attacker = pool[len(pool) - n_attacker :] if n_attacker else pool[:0]
    owner = pool if attacker_overlaps_owner else pool[: len(pool) - n_attacker]
    n_key = round(key_fraction * len(owner))
    key = owner[:n_key]
    return Splits(owner=owner, attacker=attacker, unlabeled=unlabeled, key=key)
