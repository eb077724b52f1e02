"""The trials behind one matrix cell: each phase's folder and state; Enter on a phase
dismisses the screen with it (the matrix view then replays it, live while it runs)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

from wmtui.tui.matrix_state import PhaseRow


class MatrixTrials(Screen[PhaseRow | None]):
    CSS = """
    #trials-title { height: 1; background: $primary; text-style: bold; padding: 0 1; }
    #trials-note { height: auto; padding: 0 1; color: $warning; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "replay", "replay phase"),
        Binding("escape,q", "back", "matrix"),
    ]

    def __init__(self, title: str, rows: list[PhaseRow]) -> None:
        super().__init__()
        self.heading = title
        self.rows = rows

    def compose(self) -> ComposeResult:
        live = sum(r.live for r in self.rows)
        trials = len({r.trial for r in self.rows})
        suffix = f", {live} running" if live else ""
        yield Static(f"{self.heading}: {trials} trial(s){suffix}", id="trials-title")
        yield DataTable(id="trial-phases", cursor_type="row", zebra_stripes=True)
        yield Static("", id="trials-note")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("trial", "phase", "status", "folder")
        for index, row in enumerate(self.rows):
            status = f"{row.status} ▶" if row.live else row.status
            table.add_row(row.trial, row.phase, status, str(row.folder), key=str(index))
        if not self.rows:
            self.query_one("#trials-note", Static).update("no trial covers this cell")
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_replay()

    def action_replay(self) -> None:
        if not self.rows:
            return
        row = self.rows[self.query_one(DataTable).cursor_row]
        if not row.recorded:
            self.query_one("#trials-note", Static).update(
                f"{row.phase} of {row.trial} has no recording yet ({row.status})"
            )
            return
        self.dismiss(row)

    def action_back(self) -> None:
        self.dismiss(None)
