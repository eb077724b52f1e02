"""Browsing a sweep's trials: a table of every trial's values, status and headline metrics;
Enter replays a finished trial's recorded events in the usual replay dashboard.

Two apps never share the terminal: the browser exits with the chosen trial, the replay
runs, and the browser opens again (on the same row) until it is quit. It reads the sweep's
``results.jsonl`` only, so it shows a sweep run anywhere (a Ray cluster's included) as long
as the trials' folders are here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from engine.jobs.sweep_results import read_rows

#: metrics shown as percentages (the others as numbers)
PERCENT = ("test_acc", "retention")


def columns(rows: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The axis names and metric names of ``rows``, in first-seen order."""
    axes: dict[str, None] = {}
    metrics: dict[str, None] = {}
    for row in rows:
        axes |= dict.fromkeys(row["point"])
        metrics |= dict.fromkeys(row["metrics"])
    return list(axes), list(metrics)


def cell(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and any(p in name for p in PERCENT):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


class SweepBrowser(App[Path | None]):
    """The trials of one sweep folder; returns the trial folder to replay (None: quit)."""

    TITLE = "wmtui sweep"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "replay", "replay trial"),
        Binding("q,escape", "quit_browser", "quit"),
    ]

    def __init__(self, out: Path, cursor: int = 0) -> None:
        super().__init__()
        self.out = out
        self.rows = read_rows(out)
        self.cursor = cursor

    def compose(self) -> ComposeResult:
        done = sum(r["status"] == "completed" for r in self.rows)
        yield Static(
            f"{self.out}: {done}/{len(self.rows)} trials completed — Enter replays one",
            id="sweep-title",
        )
        yield DataTable(id="trials", cursor_type="row", zebra_stripes=True)
        yield Static("", id="sweep-note")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        axes, metrics = columns(self.rows)
        table.add_columns("trial", *axes, "status", "s", *metrics)
        for row in self.rows:
            seconds = row.get("seconds")
            table.add_row(
                row["trial"],
                *(cell(a, row["point"].get(a)) for a in axes),
                row["status"],
                "-" if seconds is None else f"{seconds:.0f}",
                *(cell(m, row["metrics"].get(m)) for m in metrics),
                key=row["trial"],
            )
        if self.rows:
            table.move_cursor(row=min(self.cursor, len(self.rows) - 1))
        table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        """Enter on a row (the table takes the key before the app's binding would)."""
        self.action_replay()

    def action_replay(self) -> None:
        table = self.query_one(DataTable)
        if not self.rows:
            return
        row = self.rows[table.cursor_row]
        folder = self.out / row["run"]
        if not (folder / "events.jsonl").is_file():
            note = f"trial {row['trial']} has no recording yet ({row['status']})"
            self.query_one("#sweep-note", Static).update(note)
            return
        self.cursor = table.cursor_row
        self.exit(folder)

    def action_quit_browser(self) -> None:
        self.exit(None)


def browse(out: Path, speed: float = 16.0) -> None:
    """The browser, then each chosen trial's replay, until the browser is quit."""
    from wmtui.tui.replay import ReplaySession
    from wmtui.tui.replay_app import ReplayApp

    cursor = 0
    while True:
        browser = SweepBrowser(out, cursor)
        chosen = browser.run()
        if chosen is None:
            return
        cursor = browser.cursor
        session = ReplaySession(chosen, speed)
        ReplayApp(lambda session=session: session).run()
