"""What the matrix view shows, read from a recipe's folder: no Textual here, so the numbers,
the colours and which trial is live are tested without a terminal.

The view re-reads ``recipe.json`` (rewritten as each phase ends), so it shows a recipe run by
this process, by worker processes or by a Ray cluster alike, as long as the folders are here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.studies.recipe_matrix import (
    CLAIMS_TABLE,
    Matrix,
    MatrixTable,
    matrix_table,
    removed_fraction,
    trials_of,
)

RESULT_FILE = "recipe.json"
#: the background of a cell by its removed-rate: kept (green) to removed (red), in steps
SHADES = ("#276749", "#2f855a", "#975a16", "#c05621", "#c53030")
EMPTY = "#2d3748"
#: a matrix cell is this many characters wide (its value and a space): 80 columns show 10
CELL_WIDTH = 5


def read_result(out: Path) -> dict[str, Any] | None:
    """``recipe.json`` as it is now; None before the first write or while torn."""
    try:
        result = json.loads((out / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if isinstance(result, dict) else None


def shade(fraction: float | None) -> str:
    if fraction is None:
        return EMPTY
    step = min(int(fraction * len(SHADES)), len(SHADES) - 1)
    return SHADES[max(step, 0)]


def cell_text(matrix: Matrix, table: MatrixTable, row: str, column: str) -> str:
    """The value in a cell: the colour metric rounded (``100`` for 100%), ``·`` while none of
    its trials has finished, ``n/a`` when they all have and gave no value."""
    value = table.value(row, column, matrix.colour)
    if table.not_applicable(row, column, matrix.colour):
        return "n/a"  # finished, and the referee could not judge it
    return "·" if value is None else f"{value:.0f}"


@dataclasses.dataclass(frozen=True)
class PhaseRow:
    """One phase of a trial behind a cell, where its folder is and whether it runs now."""

    trial: str
    phase: str
    folder: Path
    status: str

    @property
    def live(self) -> bool:
        return self.status == "running"

    @property
    def recorded(self) -> bool:
        return (self.folder / "events.jsonl").is_file()


def phase_rows(
    matrix: Matrix, result: dict[str, Any], out: Path, row: str, column: str
) -> list[PhaseRow]:
    """Every phase of every trial behind (row, column): the phase cache's folder when the
    recipe ran on its phase graph (``trials[].phases``), else the trial's own folder."""
    items = ((result.get("phases") or {}).get("items")) or {}
    status_of = {str(i.get("folder")): str(i.get("status", "")) for i in items.values()}
    rows = []
    for trial in trials_of(matrix, result.get("trials") or [], row, column):
        phases = trial.get("phases") or {}
        if not phases:
            rows.append(
                PhaseRow(
                    str(trial.get("id")),
                    "(trial)",
                    out / str(trial.get("run", "")),
                    str(trial.get("status", "")),
                )
            )
            continue
        for name, folder in phases.items():
            path = Path(folder) if Path(folder).is_absolute() else out / folder
            status = status_of.get(str(folder)) or _folder_status(path)
            rows.append(PhaseRow(str(trial.get("id")), str(name), path, status))
    return rows


def _folder_status(folder: Path) -> str:
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "running" if (folder / "events.jsonl").is_file() else "pending"
    return str(summary.get("status", "completed")) if isinstance(summary, dict) else "pending"


def progress_line(matrix: Matrix, table: MatrixTable, result: dict[str, Any] | None) -> str:
    """``12/24 cells · 30/72 trials · claims: 1 holds, 2 waiting`` (the title bar)."""
    if result is None:
        return "no result yet"
    measured = sum(
        table.value(r, c, matrix.colour) is not None for r in table.rows for c in table.columns
    )
    trials = result.get("trials") or []
    done = sum(t.get("status") == "completed" for t in trials)
    claims = [c for c in result.get("cells") or [] if c.get("table") == CLAIMS_TABLE]
    held = sum(c.get("mean") == 100.0 for c in claims)
    waiting = sum(c.get("mean") is None for c in claims)
    text = f"{measured}/{len(table.rows) * len(table.columns)} cells · {done}/{len(trials)} trials"
    if claims:
        text += f" · claims: {held} hold, {len(claims) - held - waiting} fail, {waiting} waiting"
    return text


def table_of(
    matrix: Matrix, result: dict[str, Any] | None, planned: Sequence[Mapping[str, Any]] = ()
) -> MatrixTable:
    """The matrix as ``result`` has it; before any result, the ``planned`` cells' layout
    (the recipe's own cells: every row and column, nothing measured yet)."""
    result = result or {}
    cells = result.get("cells") or list(planned)
    return matrix_table(matrix, cells, result.get("trials") or [])


def fraction(matrix: Matrix, table: MatrixTable, row: str, column: str) -> float | None:
    return removed_fraction(table.value(row, column, matrix.colour), matrix)
