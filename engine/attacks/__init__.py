"""The adversary's side: removal attacks and detectors under an explicit attacker budget
(docs/attacks.md). One module per plugin; importing the package registers
every one in :data:`ATTACKS` (removal attacks and detectors by role). The refereed jobs that
run them are in :mod:`engine.jobs`: an attack never sees the owner's key.
"""

from __future__ import annotations

from engine.attacks import abs_scan as _abs_scan  # noqa: F401  (registers "abs")
from engine.attacks import adversarial_training as _adversarial_training  # noqa: F401
from engine.attacks import distill as _distill  # noqa: F401  (registers "distill")
from engine.attacks import ensemble as _ensemble  # noqa: F401
from engine.attacks import feature_permutation as _feature_permutation  # noqa: F401
from engine.attacks import fine_prune as _fine_prune  # noqa: F401
from engine.attacks import finetune as _finetune  # noqa: F401
from engine.attacks import ft_basic as _ft_basic  # noqa: F401
from engine.attacks import ftau as _ftau  # noqa: F401
from engine.attacks import gan as _gan  # noqa: F401  (registers "gan")
from engine.attacks import jacobian_augmentation as _jacobian_augmentation  # noqa: F401
from engine.attacks import knockoff as _knockoff  # noqa: F401
from engine.attacks import label_smoothing as _label_smoothing  # noqa: F401
from engine.attacks import laundering as _laundering  # noqa: F401
from engine.attacks import neural_cleanse as _neural_cleanse  # noqa: F401
from engine.attacks import preprocessing as _preprocessing  # noqa: F401
from engine.attacks import prune as _prune  # noqa: F401
from engine.attacks import regularization as _regularization  # noqa: F401
from engine.attacks import retraining as _retraining  # noqa: F401  (and cross-retraining)
from engine.attacks import smooth_retraining as _smooth_retraining  # noqa: F401
from engine.attacks import strip_evasion as _strip_evasion  # noqa: F401
from engine.attacks import tabor as _tabor  # noqa: F401  (registers "tabor")
from engine.attacks import transfer_learning as _transfer_learning  # noqa: F401
from engine.attacks import weight_quantization as _weight_quantization  # noqa: F401
from engine.attacks import weight_shifting as _weight_shifting  # noqa: F401
from engine.attacks.budget import AttackerBudget, AttackerData, build_attacker_data, fit_images
from engine.attacks.detection import Detection, Detector
from engine.attacks.registry import (
    ATTACKS,
    DETECTION,
    DETECTOR,
    EVASION,
    EXTRACTION,
    FAMILIES,
    MODIFICATION,
    PREPROCESSING,
    REMOVAL,
    Attack,
    AttackEnv,
    AttackResult,
    TrainReport,
    make_attack,
    make_detector,
    register_attack,
    register_detector,
)

__all__ = [
    "ATTACKS",
    "DETECTION",
    "DETECTOR",
    "EVASION",
    "EXTRACTION",
    "FAMILIES",
    "MODIFICATION",
    "PREPROCESSING",
    "REMOVAL",
    "Attack",
    "AttackEnv",
    "AttackResult",
    "AttackerBudget",
    "AttackerData",
    "Detection",
    "Detector",
    "TrainReport",
    "build_attacker_data",
    "fit_images",
    "make_attack",
    "make_detector",
    "register_attack",
    "register_detector",
]
