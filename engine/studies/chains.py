"""Preset chains of stacked attacks, and what a chain given by name or text means.

A preset (``engine/studies/presets/chains/NAME.toml``, read through the one resolver of
:mod:`engine.studies.presets`) is a title, its source (the WRT config it reproduces), a
description and ``[[steps]]`` tables, each ``attack = NAME`` with optional ``params``. The
SoK's combined attacks ship as ``sok-combined-1`` to ``-4`` (WRT
``configs/cifar10/attack_configs/combined_attack{1,2,3,4}.yaml``; its fifth, transfer
learning then smoothing, needs transfer learning, which is not here yet).

The job layer runs explicit lists only (``engine.jobs`` never reads study files), so the CLI's
``--attack NAME`` and a scenario's ``chain = "NAME"`` expand a preset here first.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.jobs.chain import is_chain_text
from engine.studies import presets

KIND = "chain"


@dataclasses.dataclass(frozen=True)
class ChainPreset:
    name: str
    title: str
    source: str
    description: str
    steps: list[dict[str, Any]]


def chain_names() -> list[str]:
    return presets.preset_names(KIND)


def load_chain(name_or_file: str | Path) -> ChainPreset:
    """A preset chain by name, or a chain TOML file; its shape is checked here, its attacks
    and params where the job is checked (the same checks as a chain given inline)."""
    source = presets.resolve(KIND, name_or_file)
    raw = source.read()
    where = str(source)
    extra = set(raw) - {"title", "source", "description", "steps"}
    if extra:
        raise ConfigError(
            f"{where}: unknown key {sorted(extra)[0]!r} (title, source, description, steps)"
        )
    steps = raw.get("steps")
    if not isinstance(steps, list) or not all(isinstance(s, Mapping) for s in steps):
        raise ConfigError(f"{where}: needs [[steps]] tables (attack = NAME, params = {{...}})")
    return ChainPreset(
        source.name,
        str(raw.get("title", source.name)),
        str(raw.get("source", "")),
        str(raw.get("description", "")).strip(),
        [dict(step) for step in steps],
    )


def is_chain_name(text: str) -> bool:
    """A preset chain's name, or a chain file (``.toml``)."""
    return text in chain_names() or text.endswith(".toml")


def expand_chain(value: Any) -> tuple[str, list[Any]]:
    """``(label, steps)`` of a chain given as a preset name or file, a text ``a,b,c`` or a
    list of steps; the label names the chain in summaries (the preset's name, else empty:
    the steps' names then)."""
    if isinstance(value, str) and not is_chain_text(value):
        preset = load_chain(value)
        return preset.name, preset.steps
    if isinstance(value, str):
        return "", [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        raise ConfigError(f"a chain is a preset name, a list of attacks or 'a,b,c', got {value!r}")
    return "", list(value)
