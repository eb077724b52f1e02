"""The one registry pattern: named plugins, each with a params dataclass.

Datasets, models, watermark schemes and attacks all register here. A plugin declares its
parameters once, as a dataclass whose fields carry ``help`` and bounds in their metadata;
CLI flags, TOML keys and TUI forms are generated from that declaration, and values from any of
them are validated by :func:`parse_params`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar, get_args, get_type_hints

from engine.errors import ConfigError, unknown_name

T = TypeVar("T")


def param(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with the metadata every front end reads (help text and bounds)."""
    meta = {
        "help": help,
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": choices,
    }
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Plugin(Generic[T]):
    name: str
    factory: T
    params: type | None
    summary: str
    #: what the plugin is among its registry's kinds (an attack registry holds removal
    #: attacks and detectors): front ends list by role, never by testing types
    role: str = ""
    #: a finer grouping within a role, for listings (attacks: the SoK's families
    #: preprocessing / modification / extraction / detection); empty when a registry has none
    family: str = ""


class Registry(Generic[T]):
    """Maps names to plugins; unknown names fail with the closest valid suggestion."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._plugins: dict[str, Plugin[T]] = {}

    def register(
        self, name: str, params: type | None = None, *, role: str = "", family: str = ""
    ) -> Callable[[T], T]:
        def decorate(factory: T) -> T:
            if name in self._plugins:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            doc = (getattr(factory, "__doc__", None) or "").strip().splitlines()
            self._plugins[name] = Plugin(name, factory, params, doc[0] if doc else "", role, family)
            return factory

        return decorate

    def unregister(self, name: str) -> None:
        """Forget a plugin (tests that register a toy one clean up after themselves)."""
        self._plugins.pop(name, None)

    def get(self, name: str, role: str | None = None, *, kind: str | None = None) -> Plugin[T]:
        """The plugin ``name``; with ``role``, only among the plugins of that role (``kind``
        names them in the error, e.g. "detection method")."""
        pool = self._plugins if role is None else {p.name: p for p in self.select(role)}
        try:
            return pool[name]
        except KeyError:
            raise unknown_name(kind or self.kind, name, pool) from None

    def select(self, role: str) -> list[Plugin[T]]:
        """The plugins of one role, in registration order."""
        return [p for p in self._plugins.values() if p.role == role]

    def names(self, role: str | None = None) -> list[str]:
        return [p.name for p in (self._plugins.values() if role is None else self.select(role))]

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def __iter__(self) -> Iterator[Plugin[T]]:
        return iter(self._plugins.values())


def as_typed(value: Any) -> str:
    """``value`` as a user would type it in a flag or TOML file: ``true``, ``sgd``, ``0``.
    Python's reprs (``True``, ``'sgd'``, ``'0'``) read as code, and a quoted number looked
    like a different value from the one typed."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "automatic"
    text = str(value)
    return text if text.strip() else f'"{text}"'  # an empty value stays visible


def scalar_type(hint: Any) -> type:
    """The scalar behind a hint such as ``float`` or ``int | None``; anything else is text."""
    for candidate in (hint, *get_args(hint)):
        if candidate in (bool, int, float, str):
            return candidate
    return str


def check_value(name: str, value: Any, field: dataclasses.Field, kind: type) -> Any:
    """Coerce one value to its declared type and check its bounds; the one validator."""
    meta = field.metadata
    label = name.replace("_", "-")
    if kind is bool:
        if isinstance(value, str):
            lowered = value.strip().lower()
            if lowered not in {"true", "false", "1", "0", "yes", "no"}:
                raise ConfigError(f"{label}: expected true or false, got {as_typed(value)}")
            value = lowered in {"true", "1", "yes"}
        return bool(value)
    if kind in (int, float):
        try:
            number = kind(value)
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(inf) from TOML
            raise ConfigError(f"{label}: expected a number, got {as_typed(value)}") from None
        if isinstance(number, float) and not math.isfinite(number):
            raise ConfigError(f"{label}: must be a finite number, got {as_typed(value)}")
        low, high = meta.get("low"), meta.get("high")
        if low is not None and (number < low or (meta.get("low_open") and number == low)):
            bound = ">" if meta.get("low_open") else ">="
            raise ConfigError(f"{label}: must be {bound} {low}, got {as_typed(value)}")
        if high is not None and (number > high or (meta.get("high_open") and number == high)):
            bound = "<" if meta.get("high_open") else "<="
            raise ConfigError(f"{label}: must be {bound} {high}, got {as_typed(value)}")
        return number
    text = str(value)
    choices = meta.get("choices")
    if choices and text not in choices:
        raise unknown_name(label, text, choices)
    return text


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """A params class's resolved annotations, read once: resolving them compiles every
    annotation string, and a recipe's check parses thousands of phases' params."""
    return get_type_hints(cls)


def parse_params(cls: type[T], values: Mapping[str, Any] | None = None) -> T:
    """Build a params dataclass from loose values (CLI strings, TOML), validating every field."""
    values = dict(values or {})
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [key for key in values if key.replace("-", "_") not in fields]
    if unknown:
        # "key", not the class name: users see this line, and a TOML file's table or a form
        # names where it came from
        raise unknown_name("key", unknown[0], [f.replace("_", "-") for f in fields])
    kwargs = {}
    for name, field in fields.items():
        raw = values.get(name, values.get(name.replace("_", "-"), field.default))
        if raw == "" and type(None) in get_args(hints[name]):
            raw = None  # an optional field left empty (a form, a CLI flag): its automatic value
        kwargs[name] = (
            None if raw is None else check_value(name, raw, field, scalar_type(hints[name]))
        )
    return cls(**kwargs)


def checked_params(plugin: Plugin[Any], name: str, params: Any) -> Any:
    """``plugin``'s params from loose values (a flag's text, TOML, a deployment record) or a
    dataclass of its own type; another dataclass is one line naming both."""
    assert plugin.params is not None
    if params is None or isinstance(params, Mapping):
        return parse_params(plugin.params, params)
    if not isinstance(params, plugin.params):
        raise ConfigError(f"{name!r} takes {plugin.params.__name__}, not {type(params).__name__}")
    return params


def spec_record(record: Any, what: str) -> tuple[str, Mapping[str, Any]]:
    """``(name, params)`` of one ``{"name", "params"}`` record a file holds (a deployment's
    transforms and filters), checked as a user's input is."""
    if not isinstance(record, Mapping) or not isinstance(record.get("name"), str):
        raise ConfigError(f"a {what} record needs a name and params, got {record!r:.80}")
    params = record.get("params", {})
    if not isinstance(params, Mapping):
        raise ConfigError(f"{what} {record['name']}: params must be a table")
    return record["name"], params


def describe_params(cls: type) -> list[dict[str, Any]]:
    """Field name, type, default, help and bounds: what a form or --help page shows."""
    hints = get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        rows.append(
            {
                "name": field.name,
                "type": scalar_type(hints[field.name]).__name__,
                "default": field.default,
                **{k: v for k, v in field.metadata.items() if v is not None},
            }
        )
    return rows
