"""What the SoK table runs: its schemes, its attacks (from the registry, by family), each
attack's budget at a scale, and the models' training config.

Kept apart from ``sok_attacks.py`` (which runs the jobs and prints the table). The attacker's
budget follows WRT (Lukas et al., S&P 2022; ``dnn-security/Watermark-Robustness-Toolbox``):
its attacker holds a third of the training data (``wrt/training/datasets/cifar10.py``: the
``attacker`` subset is the first ``len // 3`` of a seeded shuffle) and each attack trains for
the epochs of its config (``configs/cifar10/attack_configs/<name>.yaml``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sok_table import COMBINED_FAMILY

from engine.attacks import ATTACKS, MODIFICATION, PREPROCESSING, REMOVAL
from engine.errors import unknown_name
from engine.studies.presets import preset_names, resolve

#: the table's column order; dual signs its claim with the classroom key pair
SCHEMES = ("pattern", "abstract", "newlabel", "dual")
SCHEME_PARAMS: dict[str, dict[str, Any]] = {
    "dual": {"owner": "sok-benchmark", "signing_key": "demo"},
}
#: removal attacks of the two families that are not part of the table, and why
EXCLUDED = {"piracy": "a claim attack (embeds the attacker's own key), judged by its claim"}
#: attacks run once per variant (the SoK lists the four fine-tuning baselines apart) or with
#: WRT's own setting where ours differs (fine_pruning.yaml prunes 96%, as the chain preset)
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "finetune": [{"mode": m} for m in ("ftll", "ftal", "rtll", "rtal")],
    "fine-prune": [{"ratio": 0.96}],
}
#: WRT's epochs per attack (configs/cifar10/attack_configs/<name>.yaml), for --scale full
WRT_EPOCHS = {
    "finetune": 5,
    "finetune mode=rtll": 10,
    "fine-prune": 10,
    "weight-shifting": 10,
    "label-smoothing": 5,
    "adversarial-training": 5,
    "regularization": 5,
    "neural-laundering": 5,
    "weight-quantization": 1,
}
#: --scale smoke's attacks, the first three registered: cheap ones, a chain among them
SMOKE_ATTACKS = (
    "gaussian-smoothing",
    "weight-quantization",
    "sok-combined-1",
    "jpeg",
    "feature-permutation",
    "ft-basic",
    "prune",
)
#: attacks whose job took minutes where the others took seconds (fashion-mnist + lenet5, one
#: model, measured on a busy 2-core machine): run last within a seed, so a table cut short
#: holds the rest, and given one epoch at --scale quick
COSTLY = (
    "overwriting",
    "sok-combined-4",
    "adversarial-training",
    "neural-laundering",
    "input-reconstruction",
)
NULL_SEED = 100  # the null models' seeds: 100, 101, ...
#: steps between the embedding's test evaluations (each reads 10,000 images; they change no
#: weight) and an attack's (none: the verdict is the referee's after the attack)
EMBED_EVAL_EVERY, ATTACK_EVAL_EVERY = 1000, 10**6


@dataclasses.dataclass(frozen=True)
class Scale:
    """How big the table is: the models' training and the attacker's budget."""

    dataset: str
    train_size: int  # 0: the full training set
    test_size: int
    epochs: int  # the embedded and the null models'
    null_models: int
    data_fraction: float
    attack_epochs: int | None  # every attack's; None: WRT's per attack
    costly_epochs: int | None  # the COSTLY attacks' when attack_epochs is None (None: WRT's)
    seeds: tuple[int, ...]
    schemes: tuple[str, ...]
    max_attacks: int = 0  # 0: all


SCALES = {
    "smoke": Scale("synthetic", 6000, 500, 3, 2, 0.2, 1, 1, (0,), ("pattern", "abstract"), 3),
    "quick": Scale("fashion-mnist", 0, 0, 3, 5, 0.1, None, 1, (0, 1, 2), SCHEMES),
    "full": Scale("fashion-mnist", 0, 0, 3, 5, 1 / 3, None, None, (0, 1, 2), SCHEMES),
}


@dataclasses.dataclass(frozen=True)
class Cell:
    """One attack of the table: a registered attack with params, or a combined chain."""

    label: str
    family: str
    name: str  # what JobSpec.attack is given
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: a combined attack's steps: ``{"attack": NAME, "params": {...}}`` each
    chain: tuple[dict[str, Any], ...] = ()

    def step_names(self) -> list[str]:
        return [step["attack"] for step in self.chain]


def digest(values: Any) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]


def registry_cells() -> list[Cell]:
    """Preprocessing, then modification attacks, as registered, with their variants."""
    cells: list[Cell] = []
    for family in (PREPROCESSING, MODIFICATION):
        for plugin in ATTACKS.select(REMOVAL):
            if plugin.family != family or plugin.name in EXCLUDED:
                continue
            for params in VARIANTS.get(plugin.name, [{}]):
                label = " ".join([plugin.name, *(f"{k}={v}" for k, v in params.items())])
                cells.append(Cell(label, family, plugin.name, params))
    return cells


def combined_cells() -> list[Cell]:
    """The SoK's combined attacks: the engine's chain presets named ``sok-*`` (WRT
    configs/cifar10/attack_configs/combined_attack1-4.yaml; combined_attack.yaml starts with
    transfer learning, the next issue's), those whose every step is registered."""
    cells = []
    for name in preset_names("chain"):
        steps = tuple(dict(step) for step in resolve("chain", name).read().get("steps", []))
        if name.startswith("sok-") and all(step.get("attack") in ATTACKS for step in steps):
            cells.append(Cell(name, COMBINED_FAMILY, name, chain=steps))
    return cells


def plan_cells(wanted: Sequence[str], limit: int) -> list[Cell]:
    """The table's rows, filtered by ``--attacks`` (labels, names or family names); a name
    that matches nothing is one line and exit code 2."""
    cells = registry_cells() + combined_cells()
    if wanted:
        chosen = [c for c in cells if {c.label, c.name, c.family, c.label.split()[0]} & set(wanted)]
        known = {n for c in cells for n in (c.label, c.name, c.family, c.label.split()[0])}
        for name in wanted:
            if name not in known:
                raise unknown_name("--attacks entry", name, known)
        cells = chosen
    if limit and len(cells) > limit:  # smoke: cheap attacks, else the first of each family
        cheap = [c for name in SMOKE_ATTACKS for c in cells if c.label == name]
        firsts = list({c.family: c for c in reversed(cells)}.values())[::-1]
        rest = [c for c in firsts + cells if c not in cheap]
        chosen = list({c.label: c for c in cheap + rest}.values())[:limit]
        cells = [c for c in cells if c in chosen]  # the table's order: by family
    return cells


def run_order(cells: list[Cell]) -> list[Cell]:
    """``cells`` with the :data:`COSTLY` ones last (their table order is kept apart)."""
    return sorted(cells, key=lambda c: COSTLY.index(c.label) + 1 if c.label in COSTLY else 0)


def budget_for(cell: Cell, scale: Scale) -> dict[str, Any]:
    """The attacker's budget of one cell at ``scale``."""
    budget: dict[str, Any] = {"data_fraction": round(scale.data_fraction, 4)}
    if scale.attack_epochs is not None:
        budget["epochs"] = scale.attack_epochs
    elif scale.costly_epochs is not None and cell.label in COSTLY:
        budget["epochs"] = scale.costly_epochs
    else:
        epochs = WRT_EPOCHS.get(cell.label, WRT_EPOCHS.get(cell.label.split()[0]))
        if cell.chain:  # the budget's epochs go to each step: the chain's longest step's
            epochs = max((WRT_EPOCHS.get(s, 0) for s in cell.step_names()), default=0) or None
        if epochs:  # else the budget's default (10, REFIT's), as wmtui attack would
            budget["epochs"] = epochs
    return budget


def train_config(scale: Scale, dataset: str, model: str, seed: int, device: str) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "model": model,
        "epochs": scale.epochs,
        "train_size": scale.train_size,
        "test_size": scale.test_size,
        "seed": seed,
        "device": device,
    }
