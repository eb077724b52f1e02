"""The matrix view: a recipe's ``[matrix]`` (schemes × attacks) filling as its cells finish.

Each cell shows the colour metric (the removed-rate, in %) on a background from green (kept)
to red (removed), ``·`` until one of its trials has finished; the line under the table names
the highlighted cell in full with its other numbers. Enter opens the cell's trials and their
phase folders (:mod:`wmtui.tui.screens.matrix_trials`); Enter on a phase replays it in the
replay dashboard, following it live while it runs, and the matrix comes back when that is
quit. Like the sweep browser, two apps never share the terminal: the view exits with the
chosen phase and opens again on the same cell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from engine.studies.recipe_matrix import Matrix
from wmtui.tui.matrix_state import (
    CELL_WIDTH,
    cell_text,
    fraction,
    phase_rows,
    progress_line,
    read_result,
    shade,
    table_of,
)
from wmtui.tui.screens.matrix_trials import MatrixTrials

#: the row labels' column (a scheme's name, cut)
LABEL_WIDTH = 11


@dataclasses.dataclass(frozen=True)
class Choice:
    """The phase the view exits with, to be replayed (``live``: it is still running)."""

    folder: Path
    live: bool


class MatrixApp(App[Choice | None]):
    """One recipe folder's matrix; returns the phase to replay (None: quit)."""

    TITLE = "wmtui reproduce"
    CSS = """
    #matrix-title {
        height: 1; background: $primary; text-style: bold; padding: 0 1;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    #matrix-cell { height: 2; padding: 0 1; }
    #matrix { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open_cell", "trials"),
        Binding("q,escape", "quit_view", "quit"),
    ]

    def __init__(
        self,
        out: Path,
        matrix: Matrix,
        title: str = "",
        running: Any = None,
        cursor: tuple[int, int] = (0, 0),
        planned: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        super().__init__()
        #: the recipe's cells: the layout shown before the run has written any result
        self.planned = planned
        self.out = out
        self.matrix = matrix
        self.recipe_title = title or out.name
        #: a callable saying whether the recipe still runs (None: a finished or foreign run)
        self.running = running
        self.cursor = cursor
        self.result = read_result(out)
        self.table = table_of(matrix, self.result, planned)

    def compose(self) -> ComposeResult:
        yield Static(self.title_text(), id="matrix-title")
        yield DataTable(id="matrix", cursor_type="cell", zebra_stripes=False)
        yield Static("", id="matrix-cell")
        yield Footer()

    def title_text(self) -> str:
        state = ""
        if self.running is not None:
            state = "running · " if self.running() else "ended · "
        return f"{state}{progress_line(self.matrix, self.table, self.result)} · {self.recipe_title}"

    def on_mount(self) -> None:
        self.fill()
        self.set_interval(1.0, self.reload)

    def reload(self) -> None:
        """Re-read ``recipe.json``; redraw only what changed (the cursor stays put)."""
        result = read_result(self.out)
        if result is not None and result != self.result:
            self.result = result
            table = table_of(self.matrix, result, self.planned)
            same_shape = (table.rows, table.columns) == (self.table.rows, self.table.columns)
            self.table = table
            if same_shape and self.query_one(DataTable).row_count:
                self.update_cells()
            else:
                self.fill()
        self.query_one("#matrix-title", Static).update(self.title_text())

    def cell(self, row: str, column: str) -> Text:
        text = cell_text(self.matrix, self.table, row, column).rjust(CELL_WIDTH - 1)
        return Text(
            text, style=f"bold white on {shade(fraction(self.matrix, self.table, row, column))}"
        )

    def fill(self) -> None:
        grid = self.query_one(DataTable)
        grid.clear(columns=True)
        grid.add_column(self.matrix.rows[:LABEL_WIDTH], key="label", width=LABEL_WIDTH)
        for column in self.table.columns:
            grid.add_column(column[: CELL_WIDTH - 1], key=column, width=CELL_WIDTH - 1)
        for row in self.table.rows:
            grid.add_row(
                row[:LABEL_WIDTH], *(self.cell(row, c) for c in self.table.columns), key=row
            )
        if self.table.rows:
            r = min(self.cursor[0], len(self.table.rows) - 1)
            c = min(self.cursor[1], len(self.table.columns))
            grid.move_cursor(row=r, column=max(c, 1))
        grid.focus()
        self.show_cell()

    def update_cells(self) -> None:
        grid = self.query_one(DataTable)
        for row in self.table.rows:
            for column in self.table.columns:
                grid.update_cell(row, column, self.cell(row, column))
        self.show_cell()

    def highlighted(self) -> tuple[str, str] | None:
        grid = self.query_one(DataTable)
        if not self.table.rows or grid.cursor_column < 1:
            return None
        row = self.table.rows[min(grid.cursor_row, len(self.table.rows) - 1)]
        column = self.table.columns[min(grid.cursor_column - 1, len(self.table.columns) - 1)]
        return row, column

    def show_cell(self) -> None:
        """The highlighted cell in full: its names and every metric, and how many trials."""
        chosen = self.highlighted()
        line = self.query_one("#matrix-cell", Static)
        if chosen is None:
            line.update("← → ↑ ↓ move · Enter: the cell's trials")
            return
        row, column = chosen
        numbers = []
        for metric in self.matrix.metrics:
            value = self.table.value(row, column, metric.name)
            shown = "–" if value is None else f"{value:.3g}{metric.unit}"
            numbers.append(f"{metric.name} {shown}")
        count = self.table.counts.get((row, column), 0)
        line.update(f"{row} × {column}: {', '.join(numbers)} (n={count})")

    def on_data_table_cell_highlighted(self) -> None:
        self.show_cell()

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        """Enter on a cell (the table takes the key before the app's binding would)."""
        self.action_open_cell()

    def action_open_cell(self) -> None:
        chosen = self.highlighted()
        if chosen is None or self.result is None:
            return
        grid = self.query_one(DataTable)
        self.cursor = (grid.cursor_row, grid.cursor_column)
        rows = phase_rows(self.matrix, self.result, self.out, *chosen)
        self.push_screen(MatrixTrials(f"{chosen[0]} × {chosen[1]}", rows), self.replay)

    def replay(self, chosen: Any) -> None:
        if chosen is not None:
            self.exit(Choice(chosen.folder, chosen.live))

    def action_quit_view(self) -> None:
        self.exit(None)


def watch_matrix(
    out: Path,
    matrix: Matrix,
    title: str = "",
    running: Any = None,
    speed: float = 16.0,
    planned: Sequence[Mapping[str, Any]] = (),
) -> None:
    """The matrix, then each chosen phase's replay, until the matrix is quit."""
    from wmtui.tui.replay import ReplaySession
    from wmtui.tui.replay_app import ReplayApp

    cursor = (0, 1)
    while True:
        view = MatrixApp(out, matrix, title, running, cursor, planned)
        chosen = view.run()
        if chosen is None:
            return
        cursor = view.cursor
        session = ReplaySession(chosen.folder, speed, live=chosen.live)
        ReplayApp(lambda session=session: session).run()


def watch_running(
    session: Any,
    out: Path,
    matrix: Matrix,
    title: str,
    planned: Sequence[Mapping[str, Any]] = (),
) -> int:
    """The matrix of a recipe this process runs (``session``, started here): quitting the
    view stops the run cleanly (finished phases are kept; the same command resumes).
    Returns the command's exit code."""

    def running() -> bool:
        session.poll()  # the events are in the run's files already: only drain the queue
        return bool(session.running)

    session.start()
    try:
        watch_matrix(out, matrix, title, running=running, planned=planned)
    finally:
        if session.running:
            session.stop(timeout=30.0)
        session.join(5.0)
    return {"completed": 0, "stopped": 130}.get(session.status or "", 1)
