"""Removal attacks under an explicit attacker budget (DESIGN.md, "Attacks and detectors").

Importing the package registers every attack in :data:`ATTACKS`; :func:`attack_job` is the
refereed job that runs one.
"""

from __future__ import annotations

from engine.attacks import distill as _distill  # noqa: F401  (registers "distill")
from engine.attacks import fine_prune as _fine_prune  # noqa: F401
from engine.attacks import finetune as _finetune  # noqa: F401
from engine.attacks import ft_basic as _ft_basic  # noqa: F401
from engine.attacks import ftau as _ftau  # noqa: F401
from engine.attacks import gan as _gan  # noqa: F401  (registers "gan")
from engine.attacks import neural_cleanse as _neural_cleanse  # noqa: F401
from engine.attacks import prune as _prune  # noqa: F401
from engine.attacks.budget import AttackerBudget, AttackerData, build_attacker_data, fit_images
from engine.attacks.detection import Detection, detect_job, detect_manifest, make_detector
from engine.attacks.job import attack_job, attack_manifest, default_probes, make_attack
from engine.attacks.registry import (
    ATTACKS,
    Attack,
    AttackEnv,
    AttackResult,
    TrainReport,
    register_attack,
)

__all__ = [
    "ATTACKS",
    "Attack",
    "AttackEnv",
    "AttackResult",
    "AttackerBudget",
    "AttackerData",
    "Detection",
    "TrainReport",
    "attack_job",
    "attack_manifest",
    "build_attacker_data",
    "default_probes",
    "detect_job",
    "detect_manifest",
    "fit_images",
    "make_attack",
    "make_detector",
    "register_attack",
]
