"""A recipe's matrix: one phase's numbers laid out over two grid axes, and claims over it.

The SoK's result is not a list of cells but a table of schemes against attacks, and its
findings are statements about the whole table ("no scheme survives every attack"). A recipe
says so in a ``[matrix]`` table::

    [matrix]
    rows = "scheme"                 # a grid axis (values may be tables: shown by their name)
    columns = "attack"              # another axis of the same arms
    phase = "attack"                # the phase whose summary the numbers come from
    colour = "removed-rate"         # the metric the matrix view and the heatmap colour by
    removed_at = 0.5                # a cell counts as removed at this removed-rate or above
    metrics = [{ name = "removed-rate", metric = "removed", unit = "%" }, ...]
    [[matrix.claims]]               # a finding over the whole matrix, checked like a cell
    name = "no scheme is robust to every attack"
    every = "row"                   # row | column | cell
    has = "removed"                 # removed | kept (a cell below removed_at)
    columns = "*"                   # which columns count (a glob); not_columns excludes

Every (row, column, metric) becomes an ordinary cell named ``ROW × COLUMN: METRIC`` (so the
result file, ``--check`` and ``--suggest`` treat them as any other), and every claim a cell
whose value is 100 when the claim holds on the measured matrix, 0 when it does not, and none
while a cell it needs has no value yet.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

from engine.errors import ConfigError
from engine.studies.grid import value_label

# This module imports nothing of the recipe modules that use it (recipe_file builds its cells
# from the fields given here, recipe_check hands its cell_result in): no import cycle.

EVERY = ("row", "column", "cell")
HAS = ("removed", "kept")
CLAIMS_TABLE = "matrix claims"
MATRIX_TABLE = "matrix"
CLAIM_AXIS = "__matrix__"


@dataclasses.dataclass(frozen=True)
class MatrixMetric:
    name: str
    metric: str
    base: str = ""
    unit: str = ""
    #: false for a wall time: a rerun never repeats it, so it gets no regression record
    record: bool = True


@dataclasses.dataclass(frozen=True)
class Claim:
    name: str
    every: str
    has: str
    columns: str = "*"
    not_columns: str = ""
    paper_text: str = ""

    def in_scope(self, column: str) -> bool:
        chosen = fnmatch.fnmatchcase(column, self.columns)
        return chosen and not (self.not_columns and fnmatch.fnmatchcase(column, self.not_columns))


@dataclasses.dataclass(frozen=True)
class Matrix:
    rows: str
    columns: str
    phase: str
    colour: str
    metrics: list[MatrixMetric]
    claims: list[Claim]
    removed_at: float = 0.5

    def metric(self, name: str) -> MatrixMetric:
        for metric in self.metrics:
            if metric.name == name:
                return metric
        raise ConfigError(f"the matrix has no metric {name!r}")

    @staticmethod
    def cell_name(row: str, column: str, metric: str) -> str:
        return f"{row} × {column}: {metric}"


def matrix_from_mapping(raw: Any, origin: str) -> Matrix:
    """The ``[matrix]`` table, checked (its axes and phase are checked against the arms by
    :func:`matrix_cells`)."""
    where = f"{origin} [matrix]"
    table = _table(raw, where)
    allowed = {"rows", "columns", "phase", "colour", "removed_at", "metrics", "claims"}
    _known(table, allowed, where)
    metrics_raw = table.get("metrics")
    if not isinstance(metrics_raw, list) or not metrics_raw:
        raise ConfigError(f"{where}: metrics must be a non-empty list of tables")
    metrics = []
    for item in metrics_raw:
        item = _table(item, f"{where} metrics")
        _known(item, {"name", "metric", "base", "unit", "record"}, f"{where} metrics")
        unit = str(item.get("unit", ""))
        if unit not in ("%", ""):
            raise ConfigError(f"{where} metrics: unit must be '%' or '', got {unit!r}")
        record = item.get("record", True)
        if not isinstance(record, bool):
            raise ConfigError(f"{where} metrics: record must be true or false")
        name, metric = _text(item, "name", where), _text(item, "metric", where)
        metrics.append(MatrixMetric(name, metric, str(item.get("base", "")), unit, record))
    if len({m.name for m in metrics}) != len(metrics):
        raise ConfigError(f"{where}: two metrics share a name")
    colour = str(table.get("colour", metrics[0].name))
    if colour not in {m.name for m in metrics}:
        raise ConfigError(f"{where}: colour {colour!r} is not one of the metrics' names")
    removed_at = table.get("removed_at", 0.5)
    if not isinstance(removed_at, int | float) or isinstance(removed_at, bool):
        raise ConfigError(f"{where}: removed_at must be a number in (0, 1]")
    if not 0 < removed_at <= 1:
        raise ConfigError(f"{where}: removed_at must be a number in (0, 1], got {removed_at}")
    claims = [_claim(item, where) for item in table.get("claims", [])]
    return Matrix(
        rows=_text(table, "rows", where),
        columns=_text(table, "columns", where),
        phase=_text(table, "phase", where),
        colour=colour,
        metrics=metrics,
        claims=claims,
        removed_at=float(removed_at),
    )


def _claim(raw: Any, where: str) -> Claim:
    item = _table(raw, f"{where} claims")
    _known(item, {"name", "every", "has", "columns", "not_columns", "paper_text"}, where)
    name = _text(item, "name", f"{where} claims")
    every, has = str(item.get("every", "")), str(item.get("has", ""))
    if every not in EVERY:
        raise ConfigError(f"{where} claim {name!r}: every must be one of {', '.join(EVERY)}")
    if has not in HAS:
        raise ConfigError(f"{where} claim {name!r}: has must be one of {', '.join(HAS)}")
    return Claim(
        name,
        every,
        has,
        str(item.get("columns", "*")),
        str(item.get("not_columns", "")),
        str(item.get("paper_text", "")),
    )


# -- cells --------------------------------------------------------------------------------
def matrix_cells(arms: list[Any], matrix: Matrix, origin: str) -> list[dict[str, Any]]:
    """The fields of one cell per (row, column, metric) over every arm that has both axes,
    then of one per claim; a (row, column) pair two arms both produce is refused (the matrix
    would not say which it shows)."""
    cells: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    arms = [a for a in arms if matrix.rows in a.grid and matrix.columns in a.grid]
    if not arms:
        raise ConfigError(
            f"{origin} [matrix]: no arm has both axes {matrix.rows!r} and {matrix.columns!r}"
        )
    for arm in arms:
        if matrix.phase not in [p.get("name") for p in arm.phases]:
            raise ConfigError(f"{origin} [matrix]: arm {arm.name} has no phase {matrix.phase!r}")
        for row in arm.grid[matrix.rows]:
            for column in arm.grid[matrix.columns]:
                pair = (value_label(row), value_label(column))
                if pair in seen:
                    raise ConfigError(
                        f"{origin} [matrix]: {pair[0]} × {pair[1]} is in arms {seen[pair]} "
                        f"and {arm.name}; give each row and column one arm"
                    )
                seen[pair] = arm.name
                for metric in matrix.metrics:
                    cells.append(
                        {
                            "name": Matrix.cell_name(*pair, metric.name),
                            "table": MATRIX_TABLE,
                            "arm": arm.name,
                            "phase": matrix.phase,
                            "metric": metric.metric,
                            "where": {matrix.rows: row, matrix.columns: column},
                            "base": metric.base,
                            "unit": metric.unit,
                            "record": metric.record,
                        }
                    )
    for claim in matrix.claims:
        cells.append(
            {
                "name": claim.name,
                "table": CLAIMS_TABLE,
                "arm": arms[0].name,
                "phase": matrix.phase,
                "metric": "removed",
                #: no trial has this axis: the claim's value comes from the whole matrix
                "where": {CLAIM_AXIS: True},
                "measure": "matrix-claim",
                "unit": "%",
                "paper": 100.0,
                "paper_text": claim.paper_text or "holds",
            }
        )
    return cells


@dataclasses.dataclass
class MatrixTable:
    """The matrix as measured so far: labels in the file's order and each cell's numbers."""

    rows: list[str]
    columns: list[str]
    values: dict[tuple[str, str], dict[str, float | None]]
    counts: dict[tuple[str, str], int]
    #: cells whose every trial completed: one of them without a value has none to give (a
    #: scheme the referee cannot judge under that attack, DAWN under a removal attack)
    done: set[tuple[str, str]] = dataclasses.field(default_factory=set)

    def value(self, row: str, column: str, metric: str) -> float | None:
        return self.values.get((row, column), {}).get(metric)

    def not_applicable(self, row: str, column: str, metric: str) -> bool:
        return (row, column) in self.done and self.value(row, column, metric) is None


def matrix_table(
    matrix: Matrix, cells: list[Mapping[str, Any]], trials: list[Mapping[str, Any]] | None = None
) -> MatrixTable:
    """The matrix from a result's cells (``recipe.json``'s ``cells``), by their names;
    ``trials`` (its ``trials``: params and status) say which cells have finished."""
    table = MatrixTable([], [], {}, {}, finished_cells(matrix, trials or []))
    for cell in cells:
        if cell.get("table") != MATRIX_TABLE:
            continue
        name = str(cell.get("name"))
        metric = next((m for m in matrix.metrics if name.endswith(f": {m.name}")), None)
        if metric is None:
            continue
        row, _, column = name[: -len(f": {metric.name}")].partition(" × ")
        if row not in table.rows:
            table.rows.append(row)
        if column not in table.columns:
            table.columns.append(column)
        table.values.setdefault((row, column), {})[metric.name] = cell.get("mean")
        if metric.name == matrix.colour:
            table.counts[(row, column)] = int(cell.get("n") or 0)
    return table


def removed_fraction(value: float | None, matrix: Matrix) -> float | None:
    """A colour metric's value as a fraction (a rate shown in % is stored ×100)."""
    if value is None:
        return None
    unit = matrix.metric(matrix.colour).unit
    return value / 100.0 if unit == "%" else value


def finished_cells(matrix: Matrix, trials: list[Mapping[str, Any]]) -> set[tuple[str, str]]:
    """The (row, column) pairs whose every trial completed."""
    states: dict[tuple[str, str], list[bool]] = {}
    for trial in trials:
        params = trial.get("params") or {}
        if matrix.rows in params and matrix.columns in params:
            pair = (value_label(params[matrix.rows]), value_label(params[matrix.columns]))
            states.setdefault(pair, []).append(trial.get("status") == "completed")
    return {pair for pair, done in states.items() if all(done)}


def claim_holds(claim: Claim, matrix: Matrix, table: MatrixTable) -> tuple[bool | None, int]:
    """Whether ``claim`` holds on the table (None while a cell in its scope waits for a
    value), and how many cells it read. A finished cell without a value (the referee could
    not judge it) is left out, and so is a row or column left with no cell."""
    columns = [c for c in table.columns if claim.in_scope(c)]
    cells: dict[tuple[str, str], float] = {}
    for r in table.rows:
        for c in columns:
            value = removed_fraction(table.value(r, c, matrix.colour), matrix)
            if value is not None:
                cells[(r, c)] = value
            elif not table.not_applicable(r, c, matrix.colour):
                return None, len(cells)  # still to be measured
    if not cells:
        return None, 0

    def has(row: str, column: str) -> bool | None:
        if (row, column) not in cells:
            return None
        removed = cells[(row, column)] >= matrix.removed_at - 1e-9
        return removed if claim.has == "removed" else not removed

    def some(pairs: list[tuple[str, str]]) -> bool | None:
        found = [has(*pair) for pair in pairs]
        return None if all(f is None for f in found) else any(f for f in found)

    if claim.every == "row":
        verdicts = [some([(r, c) for c in columns]) for r in table.rows]
    elif claim.every == "column":
        verdicts = [some([(r, c) for r in table.rows]) for c in columns]
    else:
        verdicts = [has(*pair) for pair in cells]
    return all(v for v in verdicts if v is not None), len(cells)


def claim_values(
    run: Any,
    cell: Any,
    statuses: Mapping[str, str],
    cell_result: Callable[[Any, Any, Mapping[str, str]], dict[str, Any]],
) -> dict[str, float | None]:
    """A claim cell's one value: 100 when the claim holds on the matrix measured so far, 0
    when it does not, None while a cell it needs has no value (its verdict then waits).
    ``cell_result`` reads the matrix's own cells (the checker's, handed in)."""
    matrix = run.recipe.matrix
    assert matrix is not None
    claim = next(c for c in matrix.claims if c.name == cell.name)
    holds, _ = claim_holds(claim, matrix, _colour_table(run, matrix, statuses, cell_result))
    return {"matrix": None if holds is None else (100.0 if holds else 0.0)}


#: the matrix the last claim was judged on: (run, statuses, their copy, table); the claims of
#: one comparison share it rather than each reading every cell again (seconds on sok)
_LAST: list[Any] = []


def _colour_table(
    run: Any, matrix: Matrix, statuses: Mapping[str, str], cell_result: Callable[..., Any]
) -> MatrixTable:
    if _LAST and _LAST[0] is run and _LAST[1] is statuses and _LAST[2] == dict(statuses):
        return _LAST[3]
    colour = [
        cell_result(run, c, statuses)
        for c in run.recipe.cells
        if c.table == MATRIX_TABLE and c.name.endswith(f": {matrix.colour}")
    ]
    trials = [{"params": t.point, "status": statuses.get(t.key)} for t in run.trials]
    table = matrix_table(matrix, colour, trials)
    _LAST[:] = [run, statuses, dict(statuses), table]
    return table


def trials_of(
    matrix: Matrix, trials: list[Mapping[str, Any]], row: str, column: str
) -> list[Mapping[str, Any]]:
    """The result's trials behind one cell (``recipe.json``'s ``trials``, by their params)."""
    return [
        t
        for t in trials
        if value_label((t.get("params") or {}).get(matrix.rows)) == row
        and value_label((t.get("params") or {}).get(matrix.columns)) == column
    ]


# -- small checks -------------------------------------------------------------------------
def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table (key = value lines), got {value!r}")
    return dict(value)


def _known(raw: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(sorted(allowed))}")


def _text(raw: Mapping[str, Any], key: str, where: str) -> str:
    value = raw.get(key)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: missing field {key!r} (a non-empty string)")
    return value.strip()
