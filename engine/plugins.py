"""Third-party plugins: schemes, attacks, detectors, models and datasets from other packages.

A package adds plugins by naming them in one of the entry-point groups in :data:`GROUPS`. An
entry point names a module, whose import runs the plugin's register decorators (exactly as
our own modules register), or a callable, called once with no arguments to register. So a
plugin declares its params dataclass once and gets CLI flags, TOML keys, forms and ``--help``
from it like a built-in one.

Loading happens once per process, from :mod:`engine.jobs` after every built-in plugin is
registered: a plugin can then never take a built-in's name (it clashes instead), and every
front end (the CLI builds its flags at import time, the playground's forms, scenarios and the
Python API) reads the registries only after ``engine.jobs`` is imported. A broken plugin must
not take the tool down with it: its failure is one line on stderr naming the plugin, its
distribution and the reason, whatever it registered is taken back, and the rest works.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any

from engine.attacks.registry import ATTACKS
from engine.data.catalog import DATASETS
from engine.filters.registry import FILTERS
from engine.models.registry import MODELS
from engine.registry import Registry
from engine.transforms.registry import TRANSFORMS
from engine.watermarks.base import SCHEMES

#: entry-point group -> the registry its plugins register in (detectors: the attack group)
GROUPS: dict[str, Registry[Any]] = {
    "wmtui.schemes": SCHEMES,
    "wmtui.attacks": ATTACKS,
    "wmtui.models": MODELS,
    "wmtui.datasets": DATASETS,
    "wmtui.transforms": TRANSFORMS,
    "wmtui.filters": FILTERS,
}
#: registries whose plugins must declare a params dataclass (flags and forms come from it)
NEED_PARAMS = (SCHEMES, ATTACKS, TRANSFORMS, FILTERS)

_lock = threading.RLock()
_problems: list[str] | None = None


class PluginError(Exception):
    """A plugin that loaded but cannot be used as registered (the reason for its warning)."""


def load_plugins() -> list[str]:
    """Load every installed plugin once; later calls return the first call's warnings.

    Each warning has already been written to stderr as one line when it is returned.
    """
    global _problems
    with _lock:
        if _problems is None:
            _problems = []  # a plugin that calls this while it loads gets no second round
            points = [ep for group in GROUPS for ep in entry_points(group=group)]
            _problems = load_entry_points(points)
        return list(_problems)


def load_entry_points(points: Iterable[EntryPoint]) -> list[str]:
    """Load ``points`` in order, each on its own: a failure is a warning line on stderr and
    its registrations are undone, so a half-registered plugin never shows in a listing."""
    problems = []
    for point in points:
        reason = _load_one(point)
        if reason is not None:
            line = f"wmtui: plugin {point.name!r} from {_origin(point)} skipped: {reason}"
            line = " ".join(line.split())  # one line, whatever the exception's text holds
            sys.stderr.write(line + "\n")
            problems.append(line)
    return problems


def _load_one(point: EntryPoint) -> str | None:
    """None when ``point`` loaded and registered; else why not (its registrations undone)."""
    before = {id(registry): set(registry.names()) for registry in GROUPS.values()}
    imported = point.module in sys.modules  # a second entry point into one module
    try:
        loaded = point.load()
        if not isinstance(loaded, ModuleType) and callable(loaded) and not _registered(loaded):
            loaded()
        _check_new(point, before, imported)
    except PluginError as exc:
        _undo(before)
        return str(exc)
    except (Exception, SystemExit) as exc:  # a plugin's bug must never end wmtui
        _undo(before)
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None


def _registered(obj: object) -> bool:
    """Whether ``obj`` is already a registered factory (an entry point naming a decorated
    class or loader: importing it registered it, calling it would build one)."""
    return any(plugin.factory is obj for registry in GROUPS.values() for plugin in registry)


def _check_new(point: EntryPoint, before: dict[int, set[str]], imported: bool) -> None:
    """Refuse a plugin that registered nothing (a typo in the entry point), or an attack or
    scheme without a params dataclass (its flags, TOML keys and form would be missing)."""
    added = 0
    for registry in GROUPS.values():
        for plugin in registry:
            if plugin.name in before[id(registry)]:
                continue
            added += 1
            if registry in NEED_PARAMS and not (
                isinstance(plugin.params, type) and dataclasses.is_dataclass(plugin.params)
            ):
                raise PluginError(f"{registry.kind} {plugin.name!r} declares no params dataclass")
    if not added and not imported and point.name not in GROUPS[point.group]:
        raise PluginError(f"{point.value!r} registered no {GROUPS[point.group].kind}")


def _undo(before: dict[int, set[str]]) -> None:
    for registry in GROUPS.values():
        for name in set(registry.names()) - before[id(registry)]:
            registry.unregister(name)


def _origin(point: EntryPoint) -> str:
    """``distribution version`` and the group, for the warning line."""
    dist = getattr(point, "dist", None)
    name = f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"
    return f"{name} ({point.group} = {point.value})"
