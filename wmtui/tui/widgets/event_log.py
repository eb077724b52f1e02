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


class EventLog(Log):
    DEFAULT_CSS = """
    EventLog {
        overflow-x: hidden;
    }
    """

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
