"""Typed run configuration, validated once, saved as TOML beside every run.

The fields are declared with :func:`engine.registry.param`, the same declaration that plugin
parameters use, so CLI flags, TOML keys and forms are generated and validated one way.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, UserError
from engine.registry import param, parse_params


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What a training phase needs: data, model, optimisation and bookkeeping."""

    dataset: str = param(
        "auto",
        "dataset name, 'auto' (mnist, fashion-mnist, else synthetic), folder:PATH (a subfolder "
        "per class) or package.module:factory",
    )
    model: str = param("lenet5", "model architecture")
    epochs: int = param(2, "passes over the owner's training data", low=1, high=10_000)
    batch_size: int = param(64, "images per step", low=1, high=65_536)
    lr: float = param(0.05, "learning rate", low=0.0, high=100.0, low_open=True)
    optimizer: str = param("sgd", "optimizer", choices=("sgd", "adam"))
    momentum: float = param(0.9, "SGD momentum", low=0.0, high=1.0, high_open=True)
    weight_decay: float = param(0.0, "L2 weight decay", low=0.0, high=1.0)
    schedule: str = param(
        "cosine", "learning-rate schedule", choices=("constant", "step", "cosine")
    )
    step_size: int = param(500, "steps between decays for the 'step' schedule", low=1)
    gamma: float = param(
        0.9, "decay factor for the 'step' schedule", low=0.0, high=1.0, low_open=True
    )
    clip_grad: float = param(
        0.0,
        "clip the gradient norm to this before each step (0: off; dual embedding's +-lambda "
        "inputs need it)",
        low=0.0,
    )
    eval_every: int = param(
        100, "steps between test evaluations (each one syncs the device)", low=1
    )
    train_size: int = param(0, "use only this many training images (0: all)", low=0)
    test_size: int = param(0, "use only this many test images (0: all)", low=0)
    seed: int = param(0, "seed for data order, splits and initialisation", low=0, high=2**32 - 1)
    device: str = param("auto", "compute device", choices=("auto", "cpu", "cuda"))
    data_dir: str = param("", "where datasets live (empty: the platform cache directory)")

    def __post_init__(self) -> None:
        # A relative folder: becomes absolute when the config is checked, so the manifest of a
        # run names the same folder from any working directory (attacks and verify re-read it).
        if ":" in self.dataset:
            from engine.data.catalog import canonical_dataset

            object.__setattr__(self, "dataset", canonical_dataset(self.dataset))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> TrainConfig:
        return parse_params(cls, values)

    def replace(self, **changes: Any) -> TrainConfig:
        return parse_params(TrainConfig, {**dataclasses.asdict(self), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file, turning every failure into one ConfigError line."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:  # a folder, no permission: still one line
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from None


def toml_table(data: dict[str, Any], name: str, path: str | Path) -> dict[str, Any]:
    """``data[name]`` as a dict (empty when absent): ``train = 5`` where a ``[train]`` table
    belongs is one line naming the file, not a crash further on."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {name} must be a [{name}] table, got {table!r}")
    return dict(table)


def check_table(values: dict[str, Any], cls: type, where: str) -> None:
    """A file's table checked against ``cls``; an unknown key or a bad value is one line that
    starts with ``where`` (the file and the table), so it is fixed where it is written."""
    try:
        parse_params(cls, values)
    except UserError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"cannot write non-finite number {value} to TOML")
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(data: dict[str, Any]) -> str:
    """Write plain tables of scalars and lists: all our configs need, without a dependency."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        body = dump_toml(table)
        lines.append("")
        lines.append(f"[{name}]")
        lines.extend(
            line if not line.startswith("[") else f"[{name}.{line[1:]}"
            for line in body.splitlines()
        )
    return "\n".join(lines).strip() + "\n"
