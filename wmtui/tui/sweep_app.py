"""Browsing a sweep's trials: a table of every trial's values, status and headline metrics;
Enter replays a trial's recorded events (so far, for a running one) in the replay dashboard.

Two apps never share the terminal: the browser exits with the chosen trial, the replay
runs, and the browser opens again (on the same row) until it is quit. It reads the sweep's
``results.jsonl`` only, so it shows a sweep run anywhere (a Ray cluster's included) as long
as the trials' folders are here. Live (``wmtui sweep GRID --tui``), the sweep's driver is a
child process: the table refreshes every second while it runs, and quitting the browser
stops it (SIGINT, its clean stop) before the command exits.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Static

from engine.studies.sweep_results import (
    RESULTS_CSV,
    RESULTS_JSONL,
    SUMMARY,
    read_rows,
    summary_table,
)

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


def results_text(out: Path) -> str:
    """What the command prints once the browser is quit: the sweep's table (mean ± std per
    configuration) and where its files are; the screen's table is gone by then."""
    where = f"results in {out / RESULTS_CSV}, {out / RESULTS_JSONL} and {out / SUMMARY}"
    try:
        summary = json.loads((out / SUMMARY).read_text(encoding="utf-8"))
        table = summary_table(summary)
    except (OSError, ValueError, KeyError, TypeError):  # not written yet, or torn
        table = f"{out}: no summary yet"
    return f"{table}\n{where}"


def hidden_columns(table: DataTable[Any]) -> list[str]:
    """The columns wholly right of what the table shows (the metrics, at 80 columns)."""
    shown = table.scrollable_content_region.width + table.scroll_x
    hidden, x = [], 0
    for column in table.columns.values():
        if x >= shown:
            hidden.append(str(column.label))
        x += column.get_render_width(table)
    return hidden


class SweepBrowser(App[Path | None]):
    """The trials of one sweep folder; returns the trial folder to replay (None: quit)."""

    TITLE = "wmtui sweep"
    CSS = """
    #sweep-title {
        height: 1; background: $primary; text-style: bold; padding: 0 1;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    #sweep-note { height: auto; padding: 0 1; color: $warning; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "replay", "replay trial"),
        Binding("q,escape", "quit_browser", "quit"),
    ]

    def __init__(
        self, out: Path, cursor: int = 0, driver: subprocess.Popen[bytes] | None = None
    ) -> None:
        super().__init__()
        self.out = out
        self.rows = read_rows(out)
        self.cursor = cursor
        #: the running sweep (live mode): polled, and stopped when the browser quits
        self.driver = driver
        #: the chosen trial is still running (its replay ends where its recording does)
        self.live_trial = False
        self._note = ""  # a message of the browser's own, over the columns hint

    def compose(self) -> ComposeResult:
        yield Static(self.title_text(), id="sweep-title")
        yield DataTable(id="trials", cursor_type="row", zebra_stripes=True)
        yield Static("", id="sweep-note")
        yield Footer()

    def title_text(self) -> str:
        done = sum(r["status"] == "completed" for r in self.rows)
        running = sum(r["status"] == "running" for r in self.rows)
        state = ""
        if self.driver is not None:
            code = self.driver.poll()
            state = (
                f"sweep running, {running} trial(s) now · "
                if code is None
                else f"sweep ended (exit {code}) · "
            )
        # the counts first: at 80 columns the folder's long name is what the line cuts
        return f"{done}/{len(self.rows)} trials completed · {state}{self.out}"

    def on_mount(self) -> None:
        self.fill()
        if self.driver is not None:
            self.set_interval(1.0, self.refresh_rows)

    def refresh_rows(self) -> None:
        """Re-read ``results.jsonl`` (the driver rewrites it at every trial's start and end)."""
        rows = read_rows(self.out)
        if rows != self.rows:
            self.rows = rows
            self.fill()
        self.query_one("#sweep-title", Static).update(self.title_text())

    def fill(self) -> None:
        table = self.query_one(DataTable)
        cursor = table.cursor_row if table.row_count else self.cursor
        table.clear(columns=True)
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
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        table.focus()
        self.call_after_refresh(self.show_note)

    def show_note(self) -> None:
        """The browser's own message, else where the hidden metric columns are."""
        hidden = hidden_columns(self.query_one(DataTable))
        hint = ""
        if hidden:
            names = ", ".join(hidden[:2]) + ("…" if len(hidden) > 2 else "")
            hint = f"→ {len(hidden)} more column(s): {names} (← → scroll)"
        self.query_one("#sweep-note", Static).update(self._note or hint)

    def on_resize(self) -> None:
        self.call_after_refresh(self.show_note)

    def on_data_table_cell_highlighted(self) -> None:
        self.call_after_refresh(self.show_note)  # scrolled: the hint follows

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
            self._note = f"trial {row['trial']} has no recording yet ({row['status']})"
            self.show_note()
            return
        self.cursor = table.cursor_row
        self.live_trial = row["status"] == "running"
        self.exit(folder)

    def action_quit_browser(self) -> None:
        self.exit(None)


def browse(
    out: Path, speed: float = 16.0, driver: subprocess.Popen[bytes] | None = None
) -> int | None:
    """The browser, then each chosen trial's replay, until the browser is quit; a live
    sweep's driver is then stopped. Returns the driver's exit code (None without one)."""
    from wmtui.tui.replay import ReplaySession
    from wmtui.tui.replay_app import ReplayApp

    cursor = 0
    try:
        while True:
            browser = SweepBrowser(out, cursor, driver)
            chosen = browser.run()
            if chosen is None:
                break
            cursor = browser.cursor
            session = ReplaySession(chosen, speed, live=browser.live_trial)
            ReplayApp(lambda session=session: session).run()
    finally:
        if driver is not None:
            stop_driver(driver)
    return None if driver is None else driver.returncode


def stop_driver(driver: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Ctrl-C for the sweep (its trials stop between steps, the results files stay
    complete); a driver that has not ended within ``grace`` seconds is terminated."""
    if driver.poll() is not None:
        return
    driver.send_signal(signal.SIGINT)
    try:
        driver.wait(grace)
    except subprocess.TimeoutExpired:
        driver.terminate()
        driver.wait(grace)
