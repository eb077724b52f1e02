"""Recipes: a paper's headline result as a file anyone can re-run and check.

A recipe names the paper and the table, the pipeline (one or more *arms*: scenario phases
run over a grid of seeds, targets, triggers...), two scales (``quick`` for a CPU in minutes,
``paper`` for the paper's own dataset and model) and the *cells* of the table: which phase's
summary number, averaged over which trials, the paper's figure beside it, and per scale the
expected mean with its tolerance and the reason for that tolerance. Everything is checked
here, when the file is read, with the file and the table named in the error line: a recipe
that would fail after an hour of training fails before it starts.

Layout (``engine/studies/presets/recipes/NAME.toml``)::

    title, paper, source, description      # strings; status = "pending" + pending = "why"
    [train]                                # the train config every scale starts from
    [scales.quick]  train = {...}, minutes = 12, grid = {ARM = {axis = [...]}},
                    phases = {"ARM.PHASE" = {budget = {...}, params = {...}}}
                    (skip = true: the phase is left out at that scale)
    [[arms]]        name, grid = {seed = [...], target = [...]}, exclude = [{...}],
                    [[arms.phases]] (a scenario's phases; "{axis}" values come from the grid)
    [[cells]]       name, table, arm, phase, metric = "retention.key", where = {axis = v},
                    measure = value|equals|smallest-is|ratio-to-others,
                    equals ("none": absent; smallest-is: the list's smallest entry's index),
                    index, base (a path subtracted), unit = "%",
                    paper, paper_text, expect.quick = {value, tolerance, reason},
                    claim = {at_least = N} | {at_most = N}, margin, must_reproduce,
                    record = false (a wall time: never recorded for regression)
    [regression.quick]  "CELL NAME" = {values = {"seed=0" = 51.2}, tolerance, reason}
                        (a reference run's per-trial values: ``--suggest-into`` writes them)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from engine.errors import ConfigError, UserError, unknown_name
from engine.studies import presets
from engine.studies.grid import expand, placeholders, substitute
from engine.studies.scenarios import Scenario, scenario_from_mapping

SCALES = ("quick", "paper", "standard")
MEASURES = ("value", "equals", "smallest-is", "ratio-to-others")
UNITS = {"%": 100.0, "": 1.0}
CLAIMS = ("at_least", "at_most")


@dataclasses.dataclass(frozen=True)
class Expectation:
    """What a scale should measure: the mean over the cell's trials, ± ``tolerance``."""

    value: float
    tolerance: float
    reason: str


@dataclasses.dataclass(frozen=True)
class Regression:
    """A reference run's numbers, trial by trial (keyed by the trial's grid point), and how
    far a rerun of the same seeds may move from them: run-to-run noise, not seed spread."""

    #: None where the trial finished without a value on purpose (recorded as ``"n/a"``: the
    #: referee declined to judge it); a rerun must decline again
    values: dict[str, float | None]
    tolerance: float
    reason: str = ""


#: how a regression record writes a trial that finished without a value
NOT_JUDGED = "n/a"


@dataclasses.dataclass(frozen=True)
class Cell:
    """One number of the paper's table, and how ours is read from the trials' summaries."""

    name: str
    table: str
    arm: str
    phase: str
    metric: str
    where: dict[str, Any]
    measure: str = "value"
    equals: Any = None
    index: Any = None
    #: a second path subtracted from ``metric`` (``test_acc_before``: the attack's cost)
    base: str = ""
    unit: str = ""
    paper: float | None = None
    paper_text: str = ""
    expect: dict[str, Expectation] = dataclasses.field(default_factory=dict)
    regression: dict[str, Regression] = dataclasses.field(default_factory=dict)
    #: a one-sided claim of the paper ({"at_least": 90}) judged instead of ``paper``
    claim: dict[str, float] = dataclasses.field(default_factory=dict)
    #: how far from the paper still counts as the same result (None: the unit's default)
    margin: float | None = None
    #: a "does not reproduce" verdict on the paper fails ``--check``
    must_reproduce: bool = False
    #: False for what a rerun cannot repeat to the bit (seconds): ``--suggest`` writes no
    #: regression record for it, and ``--check`` only asks that every trial has a value
    record: bool = True


@dataclasses.dataclass(frozen=True)
class Scale:
    name: str
    train: dict[str, Any]
    minutes: float
    grid: dict[str, dict[str, list[Any]]]
    phases: dict[str, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Arm:
    """A pipeline run once per grid point (each run is an ordinary scenario)."""

    name: str
    grid: dict[str, list[Any]]
    exclude: list[dict[str, Any]]
    phases: list[dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    paper: str
    source: str
    description: str
    train: dict[str, Any]
    scales: dict[str, Scale]
    arms: list[Arm]
    cells: list[Cell]
    status: str = "ready"
    pending: str = ""
    path: str = ""
    #: a ``[matrix]`` table (:mod:`engine.studies.recipe_matrix`): two axes laid out as a table
    matrix: Any = None

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise unknown_name("arm", name, [a.name for a in self.arms])

    def axes(self, arm: Arm, scale: str) -> dict[str, list[Any]]:
        """The arm's grid at ``scale`` (a scale may replace some of its axes' values)."""
        return {**arm.grid, **self.scales[scale].grid.get(arm.name, {})}

    def scenario(self, arm: Arm, scale: str, point: Mapping[str, Any]) -> Scenario:
        """The arm's phases for one grid point at ``scale``, as a checked scenario."""
        overrides = self.scales[scale].phases
        phases = []
        for raw in arm.phases:
            phase = dict(raw)
            extra = overrides.get(f"{arm.name}.{phase.get('name', '')}", {})
            if extra.get("skip") is True:
                continue
            for table in ("params", "budget", "train"):
                if table in extra:
                    phase[table] = {**phase.get(table, {}), **extra[table]}
            phases.append(substitute(phase, point))
        raw_scenario = {"title": self.title, "train": self.scale_train(scale), "phases": phases}
        return scenario_from_mapping(raw_scenario, f"{self.name}-{arm.name}", self.path)

    def scale_train(self, scale: str) -> dict[str, Any]:
        return {**self.train, **self.scales[scale].train}


# -- reading ------------------------------------------------------------------------------
def recipe_names() -> list[str]:
    return presets.preset_names("recipe")


def load_recipe(name_or_file: str) -> Recipe:
    source = presets.resolve("recipe", name_or_file)
    return recipe_from_mapping(source.read(), source.name, str(source))


def recipe_from_mapping(raw: Mapping[str, Any], name: str, source: str = "") -> Recipe:
    """A validated recipe: every scale's every trial is built as a scenario (which checks
    every plugin name and parameter) and every cell's references resolved."""
    origin = source or f"recipe {name}"
    _keys(
        raw,
        {"title", "paper", "source", "description", "train", "scales", "arms", "cells"}
        | {"status", "pending", "matrix", "regression"},
        origin,
    )
    status = str(raw.get("status", "ready"))
    if status not in ("ready", "pending"):
        raise ConfigError(f"{origin}: status must be 'ready' or 'pending', got {status!r}")
    if status == "pending" and not str(raw.get("pending", "")).strip():
        raise ConfigError(f'{origin}: a pending recipe says why in pending = "..."')
    scales_raw = _table(raw.get("scales"), f"{origin} [scales]", required=True)
    for scale in scales_raw:
        if scale not in SCALES:
            raise ConfigError(f"{origin} [scales]: {unknown_name('scale', scale, SCALES)}")
    pending = status == "pending" and "arms" not in raw  # a recipe still to be written
    arms_raw = [] if pending else _list(raw, "arms", origin)
    arms = [_arm(item, i, origin) for i, item in enumerate(arms_raw, 1)]
    if len({a.name for a in arms}) != len(arms):
        raise ConfigError(f"{origin}: two [[arms]] share a name")
    names = [a.name for a in arms]
    scales = {s: _scale(s, v, names, origin) for s, v in scales_raw.items()}
    recipe = Recipe(
        name=name,
        title=_text(raw, "title", origin),
        paper=_text(raw, "paper", origin),
        source=_text(raw, "source", origin),
        description=str(raw.get("description", "")).strip(),
        train=_table(raw.get("train", {}), f"{origin} [train]"),
        scales=scales,
        arms=arms,
        cells=[],
        status=status,
        pending=str(raw.get("pending", "")).strip(),
        path=source,
    )
    for scale in scales:
        for arm in arms:
            _check_arm(recipe, arm, scale, origin)
    matrix_only = "matrix" in raw and "cells" not in raw  # a matrix makes its own cells
    cells_raw = [] if pending or matrix_only else _list(raw, "cells", origin)
    cells = [_cell(item, i, recipe, origin) for i, item in enumerate(cells_raw, 1)]
    if "matrix" in raw:  # its cells come after the file's own
        from engine.studies.recipe_matrix import matrix_cells, matrix_from_mapping

        matrix = matrix_from_mapping(raw["matrix"], origin)
        recipe = dataclasses.replace(recipe, matrix=matrix)
        cells += [Cell(**fields) for fields in matrix_cells(recipe.arms, matrix, origin)]
    cells = _with_records(raw.get("regression"), cells, recipe, origin)
    return dataclasses.replace(recipe, cells=cells)


def _with_records(raw: Any, cells: list[Cell], recipe: Recipe, origin: str) -> list[Cell]:
    """The ``[regression.<scale>]`` tables, each cell's record found by its name: one table
    at the end of the file, so a matrix's generated cells can be recorded like the file's own
    and ``--suggest-into`` rewrites one table instead of editing every ``[[cells]]``."""
    if raw is None:
        return cells
    names = [c.name for c in cells]
    records: dict[str, dict[str, Regression]] = {}
    for scale, table in _table(raw, f"{origin} [regression]").items():
        where = f"{origin} [regression.{scale}]"
        if scale not in recipe.scales:
            raise ConfigError(
                f"{origin} [regression]: {unknown_name('scale', scale, recipe.scales)}"
            )
        for name, record in _table(table, where).items():
            if name not in names:
                raise ConfigError(f"{where}: {unknown_name('cell', name, names)}")
            if names.count(name) > 1:
                raise ConfigError(f"{where}: two cells are named {name!r}; rename one")
            records.setdefault(name, {})[scale] = _regression(record, f"{where} {name!r}")
    return [dataclasses.replace(c, regression=records.get(c.name, {})) for c in cells]


def _check_arm(recipe: Recipe, arm: Arm, scale: str, origin: str) -> None:
    where = f"{origin} [[arms]] {arm.name} at scale {scale}"
    short = f"[[arms]] {arm.name} at scale {scale}"  # the inner error names the file
    axes = recipe.axes(arm, scale)
    unknown = placeholders(arm.phases) - set(axes)
    if unknown:
        raise ConfigError(f"{where}: {{{sorted(unknown)[0]}}} is not an axis of the grid")
    for key in recipe.scales[scale].phases:
        arm_name, _, phase = key.partition(".")
        if arm_name == arm.name and phase not in [p.get("name") for p in arm.phases]:
            raise ConfigError(f"{origin} [scales.{scale}.phases]: no phase {key!r}")
    for point in expand(axes, arm.exclude, where):
        try:
            recipe.scenario(arm, scale, point)
        except UserError as exc:
            raise ConfigError(f"{short}, {point}: {exc}") from None


def _arm(item: Any, index: int, origin: str) -> Arm:
    where = f"{origin} [[arms]] #{index}"
    item = _table(item, where)
    _keys(item, {"name", "grid", "exclude", "phases"}, where)
    name = _text(item, "name", where)
    where = f"{origin} [[arms]] {name}"
    grid = _table(item.get("grid", {}), f"{where} grid")
    grid = {"seed": [0], **grid}
    exclude = item.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(e, Mapping) for e in exclude):
        raise ConfigError(f"{where}: exclude must be a list of tables")
    phases = _list(item, "phases", where)
    return Arm(name, grid, [dict(e) for e in exclude], [dict(_table(p, where)) for p in phases])


def _scale(name: str, raw: Any, arms: list[str], origin: str) -> Scale:
    where = f"{origin} [scales.{name}]"
    raw = _table(raw, where)
    _keys(raw, {"train", "minutes", "grid", "phases"}, where)
    minutes = raw.get("minutes")
    if not isinstance(minutes, int | float) or isinstance(minutes, bool) or minutes <= 0:
        raise ConfigError(f"{where}: minutes (the estimated time) must be a positive number")
    grid = _table(raw.get("grid", {}), f"{where} grid")
    for arm in grid:
        if arm not in arms:
            raise ConfigError(f"{where} grid: {unknown_name('arm', arm, arms)}")
    phases = _table(raw.get("phases", {}), f"{where} phases")
    for key, value in phases.items():
        if key.partition(".")[0] not in arms:
            raise ConfigError(f"{where} phases: {key!r} is not ARM.PHASE of a known arm")
        _keys(_table(value, f"{where} phases {key}"), {"params", "budget", "train", "skip"}, key)
        if not isinstance(value.get("skip", False), bool):
            raise ConfigError(f"{where} phases {key}: skip must be true or false")
    return Scale(
        name,
        _table(raw.get("train", {}), f"{where} train"),
        float(minutes),
        {k: dict(_table(v, f"{where} grid.{k}")) for k, v in grid.items()},
        {k: dict(v) for k, v in phases.items()},
    )


def _cell(item: Any, index: int, recipe: Recipe, origin: str) -> Cell:
    where = f"{origin} [[cells]] #{index}"
    item = _table(item, where)
    allowed = {"name", "table", "arm", "phase", "metric", "where", "measure", "equals", "index"}
    allowed |= {"base"}
    allowed |= {"claim", "margin", "must_reproduce", "record"}
    _keys(item, allowed | {"unit", "paper", "paper_text", "expect"}, where)
    name = _text(item, "name", where)
    where = f"{origin} [[cells]] {name!r}"
    arm_name = str(item.get("arm", recipe.arms[0].name if len(recipe.arms) == 1 else ""))
    if not arm_name:
        raise ConfigError(f'{where}: name its arm (arm = "..."), the recipe has several')
    try:
        arm = recipe.arm(arm_name)
    except UserError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    phase = _text(item, "phase", where)
    phase_names = [str(p.get("name", "")) for p in arm.phases]
    if phase not in phase_names:
        raise ConfigError(f"{where}: {unknown_name('phase', phase, phase_names)}")
    measure = str(item.get("measure", "value"))
    if measure not in MEASURES:
        raise ConfigError(f"{where}: {unknown_name('measure', measure, MEASURES)}")
    if "base" in item and measure != "value":
        raise ConfigError(f"{where}: base (a difference) goes with measure 'value' only")
    if measure in ("equals", "smallest-is") and "equals" not in item:
        raise ConfigError(f"{where}: measure {measure!r} needs equals = VALUE")
    if measure == "ratio-to-others" and "index" not in item:
        raise ConfigError(f"{where}: measure 'ratio-to-others' needs index = N")
    unit = str(item.get("unit", ""))
    if unit not in UNITS:
        raise ConfigError(f"{where}: unit must be '%' or '', got {unit!r}")
    cell_where = _table(item.get("where", {}), f"{where} where")
    axes = set().union(*(recipe.axes(arm, s) for s in recipe.scales))
    for axis in set(cell_where) | placeholders([item.get("metric"), item.get("equals")]):
        if axis not in axes:
            raise ConfigError(f"{where}: {unknown_name('axis', axis, axes)}")
    expect_raw = _table(item.get("expect", {}), f"{where} expect")
    expect = {s: _expectation(v, f"{where} expect.{s}") for s, v in expect_raw.items()}
    for scale in expect:
        if scale not in recipe.scales:
            raise ConfigError(f"{where} expect: {unknown_name('scale', scale, recipe.scales)}")
    margin = _number(item.get("margin"), f"{where} margin", optional=True)
    if margin is not None and margin <= 0:
        raise ConfigError(f"{where}: margin must be a number > 0")
    flags = {key: item.get(key, key == "record") for key in ("must_reproduce", "record")}
    for key, flag in flags.items():
        if not isinstance(flag, bool):
            raise ConfigError(f"{where}: {key} must be true or false")
    return Cell(
        name=name,
        table=str(item.get("table", "")),
        arm=arm_name,
        phase=phase,
        metric=_text(item, "metric", where),
        where=dict(cell_where),
        measure=measure,
        equals=item.get("equals"),
        index=item.get("index"),
        base=str(item.get("base", "")),
        unit=unit,
        paper=_number(item.get("paper"), f"{where} paper", optional=True),
        paper_text=str(item.get("paper_text", "")),
        expect=expect,
        claim=_claim(item.get("claim"), f"{where} claim"),
        margin=margin,
        must_reproduce=flags["must_reproduce"],
        record=flags["record"],
    )


def _expectation(raw: Any, where: str) -> Expectation:
    raw = _table(raw, where)
    _keys(raw, {"value", "tolerance", "reason"}, where)
    for key in ("value", "tolerance", "reason"):
        if key not in raw:
            raise ConfigError(f"{where}: an expected number needs {key} (value, tolerance, reason)")
    tolerance = _number(raw["tolerance"], f"{where} tolerance")
    if tolerance is None or tolerance < 0:
        raise ConfigError(f"{where}: tolerance must be a number >= 0")
    value = _number(raw["value"], f"{where} value")
    assert value is not None
    return Expectation(value, tolerance, _text(raw, "reason", where))


def _regression(raw: Any, where: str) -> Regression:
    raw = _table(raw, where)
    _keys(raw, {"values", "tolerance", "reason"}, where)
    values = _table(raw.get("values"), f"{where} values", required=True)
    if not values:
        raise ConfigError(f"{where} values: record at least one trial's value")
    tolerance = _number(raw.get("tolerance"), f"{where} tolerance")
    if tolerance is None or tolerance < 0:
        raise ConfigError(f"{where}: tolerance must be a number >= 0")
    numbers = {
        str(k): None if v == NOT_JUDGED else _number(v, f"{where} values.{k}")
        for k, v in values.items()
    }
    return Regression(numbers, tolerance, str(raw.get("reason", "")))


def _claim(raw: Any, where: str) -> dict[str, float]:
    if raw is None:
        return {}
    raw = _table(raw, where)
    if len(raw) != 1 or next(iter(raw)) not in CLAIMS:
        raise ConfigError(f"{where}: a claim is one of {{at_least = N}} or {{at_most = N}}")
    side, bound = next(iter(raw.items()))
    number = _number(bound, f"{where} {side}")
    assert number is not None
    return {side: number}


# -- small checks -------------------------------------------------------------------------
def _keys(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}: {unknown_name('key', key, allowed)}")


def _table(value: Any, where: str, required: bool = False) -> dict[str, Any]:
    if value is None and required:
        raise ConfigError(f"{where}: missing")
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table (key = value lines), got {value!r}")
    return dict(value)


def _list(raw: Mapping[str, Any], key: str, where: str) -> list[Any]:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: needs at least one [[{key}]] table")
    return value


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: missing field {key!r} (a non-empty string)")
    return value.strip()


def _number(value: Any, where: str, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"{where}: must be a number, got {value!r}")
    return float(value)
