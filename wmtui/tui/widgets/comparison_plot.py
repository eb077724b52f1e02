"""Two attacks of one kind side by side (widgets of :mod:`wmtui.tui.comparison_state`): two
piracy attacks (Li et al., Fig. 4), or two extraction attacks. The earlier attack is in the
left half, the later one in the right, each over its own steps from 0 on one shared scale, a
grey line between them. Each half has test accuracy (NC), the owner's mark and, for piracy,
the pirate's: on a dual model the owner's mark and NC should fall together and the pirate's
fail to rise; on a pattern model the pirate's mark rises while NC holds. For extraction the
lines are the stolen model's: its test accuracy, and how much of the owner's key it learnt
from the suspect's answers. The title says what is compared (``piracy``, ``retraining``) and
names the attacked models' schemes; title, legend and ticks shorten to fit the plot's width
(40 columns at 80x24)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual import events
from textual_plot import HiResMode
from textual_plot.axis_formatter import AxisFormatter

from wmtui.tui.comparison_state import ComparedRun, ComparisonView
from wmtui.tui.series import Series
from wmtui.tui.widgets.plots import ACC_FLOOR, LivePlot, legend, nice_ticks

#: each line's colour and its legend label, in full and short (the test-accuracy line is
#: green as on the accuracy plot; the owner's mark is magenta, as the first key there)
LINES = {
    "nc": ("green", "test acc", "acc"),
    "owner": ("magenta", "owner's mark", "owner"),
    "pirate": ("red", "pirate's mark", "pirate"),
}
#: the space between the halves, as a share of one half's steps
GAP = 0.1
#: below this many columns (40 at 80x24, 58 at 120x40) each half gets three x ticks at most,
#: else five
WIDE = 50


class HalvesAxis(AxisFormatter):
    """The x axis's labels: positions past ``offset`` are the right half's steps, labelled
    from 0 again."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        return halves_ticks(max_ - self.offset, self.offset, max_ticks)

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [f"{t - self.offset if t >= self.offset else t:g}" for t in ticks]


def halves_ticks(upper: float, offset: float, most: int) -> list[float]:
    """Each half's ticks from 0; the left half's last one goes when it would crowd the right
    half's 0."""
    ticks = nice_ticks(upper, most)
    left = [t for t in ticks if t <= 0.75 * upper] or [0.0]
    return left + [offset + t for t in ticks]


class ComparisonPlot(LivePlot):
    """The comparison, in the loss plot's place (the ``comparison`` class of the dashboard)."""

    upper: float = 1.0
    names: tuple[str, str] = ("", "")
    heading: str = ""
    legends: tuple[Text | None, Text | None] = (None, None)  # full, and short

    def configure(self) -> None:
        """Labels and the accuracy axis, as the accuracy plot's: called once mounted (the
        plot's own on_mount resets the limits after a subclass's)."""
        self.set_ylabel("accuracy %")
        self.set_xlabel("step of each attack")
        self.set_ylimits(ACC_FLOOR, 100)
        self.set_yticks([0, 20, 40, 60, 80, 100])

    def on_resize(self, event: events.Resize) -> None:
        self.fit_width(self.size.width)  # the content's width (the event's has the border)

    def fit_width(self, width: int) -> None:
        left, right = self.names
        titles = (
            f"{self.heading}: {left} (left) vs {right} (right)",
            f"{self.heading}: {left} │ {right}",
            f"{left} │ {right}",
        )
        self.border_title = next((t for t in titles if len(t) <= width - 4), titles[-1])
        full, short = self.legends
        self.border_subtitle = full if full is None or full.cell_len <= width - 4 else short
        offset = self.upper * (1 + GAP)
        ticks = halves_ticks(self.upper, offset, 3 if width < WIDE else 5)
        if ticks != self._x_ticks:
            self.set_xticks(ticks)
            self.refresh(layout=True)  # set_xticks alone draws nothing new

    def paint(self, view: ComparisonView, plotted: dict[str, tuple[object, ...]]) -> None:
        """Draw the last two attacks' lines when they have new points."""
        left, right = view.runs[0], view.runs[-1]
        upper = max(left.steps, right.steps, left.last_step, right.last_step, 1)
        runs = (left, right)
        counts = (len(series.x) for run in runs for series in lines(run).values())
        drawn = (upper, *(id(run) for run in runs), *counts)
        if plotted.get(str(self.id)) == drawn:
            return
        plotted[str(self.id)] = drawn
        self.clear()
        offset = upper * (1 + GAP)
        self.set_xlimits(0, offset + upper)
        self.set_x_formatter(HalvesAxis(offset))
        self.add_v_line(upper * (1 + GAP / 2), "grey50")
        for run, shift in ((left, 0.0), (right, offset)):
            for key, series in lines(run).items():
                style = LINES[key][0]
                xs = [x + shift for x in series.x]
                if len(xs) == 1:  # a line needs two points: the first reading as a dot
                    self.scatter(xs, series.y, marker_style=style, hires_mode=HiResMode.BRAILLE)
                elif xs:
                    self.plot(xs, series.y, line_style=style, hires_mode=HiResMode.BRAILLE)
        shown = [key for key in LINES if any(lines(r)[key].x for r in runs)]
        self.upper, self.names, self.heading = upper, view.title(), view.heading()
        self.legends = (
            legend([(LINES[k][1], LINES[k][0]) for k in shown]),
            legend([(LINES[k][2], LINES[k][0]) for k in shown]),
        )
        self.fit_width(self.size.width)


def lines(run: ComparedRun) -> dict[str, Series]:
    return {"nc": run.nc, "owner": run.owner, "pirate": run.pirate}
