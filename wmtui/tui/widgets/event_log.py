"""The event log: a Textual ``Log`` whose lines end with "…" where the pane cuts them.

At 80 columns many lines (a phase's results, a scan's sizes) are wider than the pane; a
plain Log cuts them silently and spends a row on a horizontal scrollbar. This one does not
scroll sideways (``overflow-x: hidden``) and marks every cut line instead; the whole line
stays in the run's ``events.jsonl``.
"""

from __future__ import annotations

from rich.cells import cell_len
from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import Log

ELLIPSIS = "…"
#: lines that repeat with new details only: a run of them is one line that updates, with a
#: count ("checkpoint saved ×12: ..."); a data-free run wrote 60 and pushed out everything
FOLDED = ("checkpoint saved",)


class EventLog(Log):
    DEFAULT_CSS = """
    EventLog {
        overflow-x: hidden;
    }
    """
    _fold: tuple[str, int] | None = None  # the prefix of the last line and its run's length

    def write_line(self, line: str, scroll_end: bool | None = None) -> EventLog:
        prefix = next((p for p in FOLDED if line.startswith(p)), None)
        last = len(self.lines) - 1
        if prefix is not None and self._fold is not None and self._fold[0] == prefix:
            count = self._fold[1] + 1
            self._fold = (prefix, count)
            self._lines[last] = f"{prefix} ×{count}{line[len(prefix) :]}"
            self._render_line_cache.discard(last)
            self.refresh_lines(last)
            return self
        self._fold = (prefix, 1) if prefix is not None else None
        super().write_line(line, scroll_end)
        return self

    def clear(self) -> EventLog:
        self._fold = None
        super().clear()
        return self

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        scroll_x, scroll_y = self.scroll_offset
        width = self.scrollable_content_region.width  # less the scrollbar, if any
        index = scroll_y + y
        if width < 2 or index >= len(self.lines):
            return strip
        if cell_len(self._process_line(self.lines[index])) <= scroll_x + width:
            return strip
        mark = Strip([Segment(ELLIPSIS, self.rich_style)], 1)
        return Strip.join([strip.crop(0, width - 1), mark])
