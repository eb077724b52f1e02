"""Grids of trials: axes of values, their combinations, and the values put into a phase.

A recipe (and a sweep) varies a pipeline along named axes (``seed``, ``target``...). Phases
refer to an axis by writing ``"{name}"`` as a value: a string that is exactly one placeholder
takes the axis value with its type (``target_label = "{target}"`` becomes the integer 3);
a placeholder inside a longer string is formatted in (``text = "W{seed}"``). An axis whose
values are tables varies several settings together (an attack with its own epochs):
``"{attack.epochs}"`` takes one field of the point's table, and a table's ``name`` labels
it in progress lines and matrices. The axis
``seed`` also sets the train config's seed. Each trial is keyed by a hash of everything it
resolves to, so a changed file never reuses a folder trained for another configuration.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

from engine.errors import ConfigError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*)*)\}")
Point = dict[str, Any]


def expand(
    axes: Mapping[str, list[Any]], exclude: list[Mapping[str, Any]] | None = None, where: str = ""
) -> list[Point]:
    """Every combination of the axes (cartesian, in the file's order), less those matching
    an ``exclude`` table (all of its keys equal)."""
    for name, values in axes.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: axis {name!r} must be a non-empty list, got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"{where}: axis {name!r} repeats a value: {values!r}")
    for rule in exclude or []:
        unknown = [k for k in rule if k not in axes]
        if unknown:
            raise ConfigError(f"{where}: exclude names {unknown[0]!r}, which is not an axis")
    names = list(axes)
    points = [dict(zip(names, combo, strict=True)) for combo in itertools.product(*axes.values())]
    kept = [p for p in points if not any(matches(p, rule) for rule in exclude or [])]
    if not kept:
        raise ConfigError(f"{where}: the excludes leave no trial")
    return kept


def matches(point: Mapping[str, Any], where: Mapping[str, Any]) -> bool:
    """Whether ``point`` has every value ``where`` names (1 and 1.0 are equal)."""
    return all(k in point and point[k] == v for k, v in where.items())


def placeholders(value: Any) -> set[str]:
    """The axis names a value (or a nested table or list) refers to."""
    if isinstance(value, str):
        return {m.group(1) for m in _PLACEHOLDER.finditer(value)}
    if isinstance(value, Mapping):
        return set().union(*(placeholders(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value)) if value else set()
    return set()


def substitute(value: Any, point: Mapping[str, Any]) -> Any:
    """``value`` with every placeholder replaced by ``point``'s value (see the module)."""
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole:
            return _field(point, whole)
        return _PLACEHOLDER.sub(lambda m: str(_field(point, m)), value)
    if isinstance(value, Mapping):
        return {k: substitute(v, point) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, point) for v in value]
    return value


def _field(point: Mapping[str, Any], match: re.Match[str]) -> Any:
    """The axis value a placeholder names, or the field of it that a dotted one names."""
    value = point[match.group(1)]
    for part in match.group(2).split(".")[1:]:
        if not isinstance(value, Mapping) or part not in value:
            raise ConfigError(f"{match.group(0)}: the axis value {value!r} has no field {part!r}")
        value = value[part]
    return value


def value_label(value: Any) -> str:
    """How an axis value is shown: a table by its ``name``, anything else as written."""
    if isinstance(value, Mapping) and "name" in value:
        return str(value["name"])
    return str(value)


def trial_key(resolved: Any) -> str:
    """A short stable hash of a trial's whole resolved configuration."""
    text = json.dumps(resolved, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def point_label(point: Mapping[str, Any]) -> str:
    """``seed=0 target=3`` (what a progress line or a table row shows)."""
    return " ".join(f"{k}={value_label(v)}" for k, v in point.items())
