"""Sweeps: a scenario (or one job) run over a grid of axes, each trial an ordinary run folder.

A grid file is a scenario file (``[train]`` and ``[[phases]]``, one phase for a single job)
plus the grid::

    title = "..."                      # optional, as are description and exclude
    exclude = [{ attack = "ftau", fraction = 0.1 }]     # top-level keys come before tables
    [train]  ...                       # the scenario's training setup
    [[phases]] ...                     # a value written "{name}" takes axis name's value
    [axes]
    seed = [0, 1, 2]                   # the axis `seed` sets the train seed
    attack = ["ft-basic", "ftau"]      # used as attack = "{attack}" in a phase
    "train.epochs" = [1, 2]            # a dotted name sets that field directly:
    "phases.ftb.budget.data_fraction" = [0.1, 0.2]      # train.F, phases.P.(params|budget|train).F
    [[zip]]                            # axes that vary together (one value of each per trial)
    trigger = ["square", "text"]
    target = [3, 7]

Everything is checked when the file is read, before anything runs: every trial's scenario is
built (which checks every plugin name and parameter), so a typo in the 40th trial fails in
a second, not after 39 trained models. Each trial is keyed by a hash of its resolved
configuration (device and data_dir left out: they say where it runs, not what it is), so a
changed grid reuses exactly the trials it still contains.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.attacks.budget import AttackerBudget
from engine.config import TrainConfig
from engine.errors import ConfigError, UserError, closest, unknown_name
from engine.jobs.spec import JOB_KINDS
from engine.studies import presets
from engine.studies.data_checks import check_trials_data
from engine.studies.grid import (
    Point,
    expand,
    matches,
    placeholders,
    point_label,
    substitute,
    trial_key,
)
from engine.studies.scenarios import Scenario, scenario_from_mapping

TRIALS = "trials"
#: the axes a configuration is averaged over (mean ± std over seeds)
SEED_AXES = ("seed", "train.seed")
#: results columns an axis may not shadow
RESERVED = ("trial", "status", "seconds", "error", "run")
_TOP_KEYS = ("title", "description", "train", "phases", "axes", "zip", "exclude")
_SECTIONS = ("params", "budget", "train")
_PHASE_FIELDS = ("on", "title", "sweep")


@dataclasses.dataclass(frozen=True)
class SweepTrial:
    """One grid point: its values, the scenario they resolve to (checked) and its key.

    ``raw`` is that scenario as plain TOML-like values, what a worker process or a Ray node
    rebuilds it from (cheaper and sturdier to send than the dataclasses)."""

    key: str
    point: dict[str, Any]
    raw: dict[str, Any]
    scenario: Scenario
    config: TrainConfig

    @property
    def label(self) -> str:
        return point_label(self.point)


@dataclasses.dataclass(frozen=True)
class Grid:
    """A grid file, read and checked, with its trials (configs without run-time overrides)."""

    name: str
    title: str
    description: str
    source: str
    axes: dict[str, list[Any]]
    zips: list[dict[str, list[Any]]]
    exclude: list[dict[str, Any]]
    trials: list[SweepTrial]

    @property
    def axis_names(self) -> list[str]:
        return [*self.axes, *(name for group in self.zips for name in group)]

    @property
    def seed_axes(self) -> list[str]:
        return [name for name in self.axis_names if name in SEED_AXES]


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """The trials to run into ``out`` (``out/trials/<key>/`` each)."""

    grid: Grid
    trials: list[SweepTrial]
    out: Path
    #: a phase cache shared with recipes and other sweeps (``--cache``); None: none, each
    #: trial computes its phases in its own folder
    cache: Path | None = None

    def folder(self, trial: SweepTrial) -> Path:
        return self.out / TRIALS / trial.key


# -- reading ------------------------------------------------------------------------------
def grid_names() -> list[str]:
    return presets.preset_names("sweep grid")


def load_grid(name_or_file: str) -> Grid:
    source = presets.resolve("sweep grid", name_or_file)
    return grid_from_mapping(source.read(), source.name, str(source))


def grid_from_mapping(raw: Mapping[str, Any], name: str, source: str = "") -> Grid:
    """A checked grid: its tables, every axis name and target, then every trial built."""
    origin = source or f"grid {name}"
    for key in raw:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{origin}: {unknown_name('key', key, _TOP_KEYS)}")
    base = {"train": raw.get("train", {}), "phases": raw.get("phases", [])}
    if "title" in raw:
        base["title"] = raw["title"]
    axes = _axes(raw.get("axes", {}), f"{origin} [axes]")
    zips = _zips(raw.get("zip", []), origin)
    names = [*axes, *(n for group in zips for n in group)]
    _check_names(names, origin)
    _check_uses(base, names, origin)
    exclude = _exclude(raw.get("exclude", []), names, origin)
    grid = Grid(
        name=name,
        title=str(raw.get("title", name)),
        description=str(raw.get("description", "")).strip(),
        source=source,
        axes=axes,
        zips=zips,
        exclude=exclude,
        trials=[],
    )
    trials = [_trial(base, point, name, source, origin) for point in grid_points(grid, origin)]
    _check_distinct(trials, origin)
    return dataclasses.replace(grid, trials=trials)


def plan_sweep(
    grid: Grid,
    out: Path,
    overrides: Mapping[str, Any] | None = None,
    cache: Path | None = None,
) -> SweepPlan:
    """The grid's trials into ``out``; ``overrides`` (device, data_dir) apply to every trial
    and leave the keys alone. Every trial is checked against its dataset before ``out``
    exists."""
    trials = grid.trials
    if overrides:
        trials = [
            dataclasses.replace(
                t, config=TrainConfig.from_mapping({**t.config.to_dict(), **overrides})
            )
            for t in trials
        ]
    check_trials_data((t.label, t.scenario, t.config) for t in trials)
    return SweepPlan(grid, trials, Path(out), cache)


# -- points and trials --------------------------------------------------------------------
def grid_points(grid: Grid, origin: str = "") -> list[Point]:
    """Every combination of the axes and zip groups (file order), less the excludes."""
    table: dict[str, list[Any]] = dict(grid.axes)
    for index, group in enumerate(grid.zips, 1):
        table[f"zip #{index}"] = [
            dict(zip(group, row, strict=True)) for row in zip(*group.values(), strict=True)
        ]
    points = []
    for combo in expand(table, None, origin or grid.source or grid.name):
        flat: Point = {}
        for key, value in combo.items():
            flat.update(value if key.startswith("zip #") else {key: value})
        points.append(flat)
    kept = [p for p in points if not any(matches(p, rule) for rule in grid.exclude)]
    if not kept:
        raise ConfigError(f"{origin or grid.name}: the excludes leave no trial")
    return kept


def resolve(base: Mapping[str, Any], point: Mapping[str, Any]) -> dict[str, Any]:
    """The scenario mapping of one point: placeholders filled, dotted targets set, ``seed``
    into the train table."""
    raw = substitute(dict(base), point)
    raw["train"] = dict(raw.get("train") or {})
    raw["phases"] = [dict(p) if isinstance(p, Mapping) else p for p in raw.get("phases", [])]
    for name, value in point.items():
        if name == "seed":
            raw["train"]["seed"] = value
        elif "." in name:
            _place(raw, name, value)
    return raw


def _place(raw: dict[str, Any], target: str, value: Any) -> None:
    """Set ``train.F``, ``phases.P.F`` or ``phases.P.SECTION.F`` (checked earlier)."""
    parts = target.split(".")
    if parts[0] == "train":
        raw["train"][parts[1]] = value
        return
    phase = next(p for p in raw["phases"] if _phase_name(p) == parts[1])
    if len(parts) == 3:
        phase[parts[2]] = value
    else:
        phase[parts[2]] = {**(phase.get(parts[2]) or {}), parts[3]: value}


def _trial(base: dict[str, Any], point: Point, name: str, source: str, origin: str) -> SweepTrial:
    raw = resolve(base, point)
    try:
        scenario = scenario_from_mapping(raw, name, source)
        config = scenario.config()
    except UserError as exc:
        text = str(exc)
        if text.startswith(origin):
            text = text[len(origin) :].lstrip(" :")
        raise ConfigError(f"{origin}, trial {point_label(point)}: {text}") from None
    resolved = {
        "train": config.to_dict() | {"device": "", "data_dir": ""},
        "phases": [p.to_dict() for p in scenario.phases],
    }
    return SweepTrial(trial_key(resolved), dict(point), raw, scenario, config)


def _check_distinct(trials: list[SweepTrial], origin: str) -> None:
    """Two points that resolve to one configuration would share a folder: say which."""
    seen: dict[str, SweepTrial] = {}
    for trial in trials:
        if trial.key in seen:
            raise ConfigError(
                f"{origin}: trials {seen[trial.key].label} and {trial.label} resolve to the "
                "same configuration (an axis changes nothing)"
            )
        seen[trial.key] = trial


# -- checks -------------------------------------------------------------------------------
def _axes(value: Any, where: str, distinct: bool = True) -> dict[str, list[Any]]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table (name = [values]), got {value!r}")
    return {str(k): _values(k, v, where, distinct) for k, v in value.items()}


def _values(name: str, value: Any, where: str, distinct: bool = True) -> list[Any]:
    """A non-empty list; an axis's values distinct (a zip group's rows are, as a whole)."""
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{where}: axis {name!r} must be a non-empty list of values, got {value!r}"
        )
    if distinct and len(_distinct(value)) != len(value):
        raise ConfigError(f"{where}: axis {name!r} repeats a value: {value!r}")
    return list(value)


def _distinct(values: list[Any]) -> set[str]:
    return {json.dumps(v, sort_keys=True, default=str) for v in values}


def _zips(value: Any, origin: str) -> list[dict[str, list[Any]]]:
    if not isinstance(value, list) or not all(isinstance(g, Mapping) for g in value):
        raise ConfigError(f"{origin}: zip must be [[zip]] tables of name = [values]")
    groups = []
    for index, group in enumerate(value, 1):
        where = f"{origin} [[zip]] #{index}"
        axes = _axes(group, where, distinct=False)
        if len(axes) < 2:
            raise ConfigError(f"{where}: a zip group needs two or more axes (else use [axes])")
        lengths = {name: len(values) for name, values in axes.items()}
        if len(set(lengths.values())) > 1:
            shown = ", ".join(f"{n} has {k}" for n, k in lengths.items())
            raise ConfigError(f"{where}: the axes of a zip group need equal lengths ({shown})")
        rows = [list(row) for row in zip(*axes.values(), strict=True)]
        if len(_distinct(rows)) != len(rows):
            raise ConfigError(f"{where}: two rows of the zip group are the same")
        groups.append(axes)
    return groups


def _check_names(names: list[str], origin: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ConfigError(f"{origin}: axis {name!r} is given twice ([axes] and [[zip]])")
        if name in RESERVED:
            raise ConfigError(f"{origin}: {name!r} is a results column; name the axis otherwise")
        seen.add(name)
    if "seed" in seen and "train.seed" in seen:
        raise ConfigError(f"{origin}: give the seed once (seed or train.seed, not both)")


def _check_uses(base: dict[str, Any], names: list[str], origin: str) -> None:
    """Every ``{name}`` is an axis, every plain axis is used, every dotted one a real field."""
    plain = [n for n in names if "." not in n]
    for used in sorted(placeholders(base)):
        if used not in plain:
            raise ConfigError(f'{origin}: "{{{used}}}" {_no_axis(used, plain)}')
    for name in plain:
        if name != "seed" and name not in placeholders(base):
            raise ConfigError(
                f'{origin} [axes]: axis {name!r} is used nowhere: write "{{{name}}}" in a '
                "phase, or name a field (train.F, phases.PHASE.params.F)"
            )
    targets, open_params = _targets(base)
    for name in names:
        if "." in name and name not in targets and not name.startswith(open_params):
            raise ConfigError(
                f"{origin} [axes]: unknown axis target {name!r}{closest(name, targets)}; a "
                "target is train.F, phases.PHASE.F or phases.PHASE.(params|budget|train).F"
            )


def _no_axis(name: str, axes: list[str]) -> str:
    if not axes:
        return "names an axis, and the grid has no [axes]"
    return f"is not an axis{closest(name, axes)}; the axes are: {', '.join(axes)}"


def _targets(base: dict[str, Any]) -> tuple[list[str], tuple[str, ...]]:
    """Every dotted name an axis may set, and the ``phases.P.params.`` prefixes whose plugin
    is itself an axis (checked when the trials are built, plugin by plugin)."""
    train_fields = [f.name for f in dataclasses.fields(TrainConfig)]
    targets = [f"train.{f}" for f in train_fields]
    open_params: list[str] = []
    for phase in base.get("phases") or []:
        if not isinstance(phase, Mapping):
            continue
        name, kind = _phase_name(phase), _kind(phase)
        if kind is None:
            continue
        prefix = f"phases.{name}."
        targets += [prefix + f for f in (*_PHASE_FIELDS, kind.plugin_key) if f]
        plugin = str(phase.get(kind.plugin_key, "")) if kind.plugin_key else ""
        if placeholders(plugin):
            open_params.append(prefix + "params.")
        elif plugin:
            targets += [prefix + "params." + f for f in _param_fields(kind, plugin)]
        section = "train" if kind.makes_model else "budget"
        fields = train_fields if kind.makes_model else _budget_fields()
        targets += [f"{prefix}{section}.{f}" for f in fields]
    return targets, tuple(open_params)


def _phase_name(phase: Mapping[str, Any]) -> str:
    """A phase's name as the scenario reader gives it (``name``, else its plugin or kind)."""
    kind = _kind(phase)
    plugin = str(phase.get(kind.plugin_key, "")) if kind and kind.plugin_key else ""
    return str(phase.get("name", plugin or phase.get("kind", "")))


def _kind(phase: Mapping[str, Any]) -> Any:
    try:
        return JOB_KINDS.get(str(phase.get("kind", ""))).factory
    except UserError:
        return None  # the scenario reader names the bad kind


def _param_fields(kind: Any, plugin: str) -> list[str]:
    try:
        params = kind.params_type(plugin)
    except UserError:
        return []  # an unknown plugin: the scenario reader names it
    return [f.name for f in dataclasses.fields(params)] if params else []


def _budget_fields() -> list[str]:
    return [f.name for f in dataclasses.fields(AttackerBudget)]


def _exclude(value: Any, names: list[str], origin: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(e, Mapping) for e in value):
        raise ConfigError(f"{origin}: exclude must be a list of tables ([{{axis = value}}])")
    for rule in value:
        for key in rule:
            if key not in names:
                raise ConfigError(f"{origin} exclude: {unknown_name('axis', key, names)}")
    return [dict(rule) for rule in value]
