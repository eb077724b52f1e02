"""The dashboard widget and what it paints from a :class:`DashboardState`: the header and
status lines, the accuracy, retention and loss lines, the per-class scan bars with their flag
lines, the trigger previews, a data-free distillation's discrepancy, two piracy or extraction
attacks side by side (widgets/comparison_plot.py) and the event log. The live app and replay
both compose one :class:`Dashboard`; a repaint draws only what changed since the last one."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Static
from textual_plot import HiResMode, PlotWidget
from textual_plot.axis_formatter import AxisFormatter

from engine.attacks import EXTRACTION
from wmtui.tui.comparison_state import PIRACY
from wmtui.tui.state import DashboardState, Series
from wmtui.tui.status import status_line, title_line
from wmtui.tui.widgets.comparison_plot import ComparisonPlot
from wmtui.tui.widgets.event_log import EventLog
from wmtui.tui.widgets.image_view import ImageView
from wmtui.tui.widgets.plots import ACC_FLOOR, LivePlot, legend, nice_ticks

RETENTION_COLOURS = ("magenta", "cyan", "red", "blue", "bright_white")
#: below this many rows the trigger previews give way and the plots' margins shrink
COMPACT_ROWS = 32
#: the discrepancy plot's lines: discrepancy, its second difference, the threshold Delta0/10
#: and the truncation marker
DISC_STYLES = {"discrepancy": "yellow", "2nd diff": "cyan", "Δ0/10": "magenta", "stop": "red"}
BRAILLE = HiResMode.BRAILLE
#: the kinds of attacks compared side by side, each also a class of the dashboard
COMPARED_KINDS = (PIRACY, EXTRACTION)


def shown_previews(previews: dict[str, Any]) -> list[tuple[str, Any]]:
    """The two images worth comparing: the true trigger beside the reversed one."""
    order = ["true trigger", "reversed-trigger"]

    def rank(item: tuple[str, Any]) -> int:
        return order.index(item[0]) if item[0] in order else len(order)

    return sorted(previews.items(), key=rank)[:2]  # stable: the others keep their order


class SymlogAxis(AxisFormatter):
    """A y axis linear within ``linear`` of 0 and logarithmic beyond: the discrepancy near 1,
    its second difference near 0.01 and negative at times (the rule is signed: a dip below
    zero truncates too), and the threshold between them, all readable on one plot. Ticks at 0
    and at ``linear`` times a power of ten, labelled in data units: 0, 0.001, 0.01, -0.001."""

    def __init__(self, linear: float = 1.0) -> None:
        self.linear = linear

    def to_axis(self, value: float) -> float:
        return math.copysign(math.log10(1 + abs(value) / self.linear), value)

    def from_axis(self, position: float) -> float:
        return math.copysign(self.linear * (10 ** abs(position) - 1), position)

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 5) -> list[float]:
        ticks = [0.0] if min_ <= 0 <= max_ else []
        sides: list[list[float]] = [[], []]
        for k in range(64):  # the decades out to the farther end
            position = self.to_axis(self.linear * 10.0**k)
            if position > max(-min_, max_):
                break
            sides[0] += [position] if position <= max_ else []
            sides[1] += [-position] if -position >= min_ else []
        step = math.ceil((len(sides[0]) + len(sides[1])) / max(max_ticks - len(ticks), 1))
        return sorted(ticks + sides[0][::-1][::step] + sides[1][::-1][::step])

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [f"{self.from_axis(tick):.3g}" for tick in ticks]


class DiscrepancyPlot(LivePlot):
    """The distillation's plot: its legend and x ticks follow its width, which halves when
    the accuracy plot's first reading appears beside it (40 columns at 80x24), with no new
    discrepancy to repaint it."""

    upper: float = 1.0
    legends: tuple[Text | None, Text | None] = (None, None)  # full, and with "D" for short

    def on_resize(self, event: events.Resize) -> None:
        self.fit_width(self.size.width)  # the content's width (the event's has the border)

    def fit_width(self, width: int) -> None:
        full, short = self.legends
        self.border_subtitle = full if full is None or full.cell_len <= width - 4 else short
        ticks = nice_ticks(self.upper, most=4 if width < 60 else 8)
        if ticks != self._x_ticks:
            self.set_xticks(ticks)
            self.refresh(layout=True)  # set_xticks alone draws nothing new


class Dashboard(Vertical):
    """Header, status line, the accuracy and loss plots (the scan bars and trigger previews
    in the loss plot's place during a scan; a data-free distillation's discrepancy there while
    the state holds one), and the event log: one widget, so the live app and replay lay out
    and paint the same screen. Classes: ``scanning`` (a scan has bars to show),
    ``discrepancy`` (a distillation to show, over an earlier scan's bars too: a scan's start
    makes the state forget the distillation), ``comparison`` (a second piracy or extraction
    attack: the two side by side, over all of those, until another job that plots starts;
    with ``piracy`` or ``extraction``, which of them), ``no-acc`` (nothing
    evaluated yet: the discrepancy takes the accuracy plot's width), ``compact`` (a small
    terminal: no previews, tighter plot margins)."""

    DEFAULT_CSS = """
    Dashboard {
        height: 1fr;
    }
    Dashboard #title {
        height: 1;
        background: $primary;
        color: $text;
        text-style: bold;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    Dashboard #status {
        height: auto;
        max-height: 2;
        padding: 0 1;
        background: $panel;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    Dashboard #plots {
        height: 1fr;
        min-height: 8;
    }
    Dashboard #plots PlotWidget {
        width: 1fr;
        height: 1fr;
        border: round $primary-darken-2;
    }
    Dashboard #log {
        height: 6;
        border-top: solid $primary-darken-2;
    }
    Dashboard #scan {
        display: none;
        width: 1fr;
    }
    Dashboard.scanning #scan {
        display: block;
    }
    Dashboard.scanning #loss-plot {
        display: none;
    }
    Dashboard #plots #disc-plot {
        display: none;
    }
    Dashboard.discrepancy #plots #disc-plot {
        display: block;
    }
    Dashboard.discrepancy #loss-plot, Dashboard.discrepancy #scan {
        display: none;
    }
    /* two piracy or extraction attacks side by side: over the loss plot, the scan, the
       distillation */
    Dashboard #plots #comparison-plot {
        display: none;
    }
    Dashboard.comparison #plots #comparison-plot {
        display: block;
    }
    Dashboard.comparison #loss-plot, Dashboard.comparison #scan,
    Dashboard.comparison #plots #disc-plot {
        display: none;
    }
    /* a distillation before any evaluation: no empty accuracy plot beside it */
    Dashboard.discrepancy.no-acc #acc-plot {
        display: none;
    }
    /* "#scan #bars", not "#bars": "#plots PlotWidget" (height 1fr) outranks a lone id, and
       the previews took half the column from the bars */
    Dashboard #scan #bars {
        height: 2fr;
        border: round $primary-darken-2;
    }
    Dashboard #previews {
        height: 1fr;
        min-height: 5;
    }
    Dashboard #previews ImageView {
        border: round $primary-darken-2;
    }
    Dashboard.compact #previews {
        display: none;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.plotted: dict[str, tuple[object, ...]] = {}  # what each plot drew last
        self.texts: dict[str, str] = {}  # what each text line shows

    def compose(self) -> ComposeResult:
        yield Static("wmtui", id="title")
        yield Static("starting…", id="status")
        with Horizontal(id="plots"):
            yield LivePlot(id="acc-plot", allow_pan_and_zoom=False)
            yield LivePlot(id="loss-plot", allow_pan_and_zoom=False)
            yield DiscrepancyPlot(id="disc-plot", allow_pan_and_zoom=False)
            yield ComparisonPlot(id="comparison-plot", allow_pan_and_zoom=False)
            with Vertical(id="scan"):
                yield LivePlot(id="bars", allow_pan_and_zoom=False)
                with Horizontal(id="previews"):
                    yield ImageView(id="preview-0")
                    yield ImageView(id="preview-1")
        yield EventLog(id="log", max_lines=1000)

    def on_mount(self) -> None:
        acc = self.query_one("#acc-plot", PlotWidget)
        acc.set_ylabel("accuracy %")
        acc.set_xlabel("step")
        acc.set_ylimits(ACC_FLOOR, 100)
        acc.set_yticks([0, 20, 40, 60, 80, 100])
        loss = self.query_one("#loss-plot", PlotWidget)
        loss.set_ylabel("loss")
        loss.set_xlabel("step")
        loss.set_ylimits(0, None)
        self.query_one("#comparison-plot", ComparisonPlot).configure()
        disc = self.query_one("#disc-plot", PlotWidget)
        disc.set_ylabel("discrepancy (log)")
        disc.set_xlabel("epoch")
        bars = self.query_one("#bars", PlotWidget)
        bars.set_xlabel("class")
        bars.set_ylabel("perturbation size")

    def fit(self, rows: int) -> None:
        """Below :data:`COMPACT_ROWS` rows (80x24) the trigger previews give way so the bars
        keep their height, and the plots drop their spare margin rows (the x label goes: the
        ticks say "step" well enough), so each plot gains two rows of data."""
        compact = rows < COMPACT_ROWS
        if self.has_class("compact") == compact:
            return  # the plots' defaults (on_mount) are the roomy layout's
        self.set_class(compact, "compact")
        for plot in self.query(PlotWidget):
            plot.margin_top, plot.margin_bottom = (1, 1) if compact else (2, 3)
        ticks = [0, 50, 100] if compact else [0, 20, 40, 60, 80, 100]
        for plot in self.query("#acc-plot, #comparison-plot").results(PlotWidget):
            plot.set_yticks(ticks)

    def paint(self, state: DashboardState) -> None:
        """Repaint from ``state``: text that changed, plots with new points, new log lines."""
        self._text("#title", title_line(state))
        self._text("#status", status_line(state))
        self._plot(
            "#acc-plot",
            [("test acc", state.acc_series, "green")]
            + [
                (name, series, RETENTION_COLOURS[i % len(RETENTION_COLOURS)])
                for i, (name, series) in enumerate(state.retention.items())
            ],
            state,
        )
        self._plot("#loss-plot", [("loss", state.loss_series, "yellow")], state)
        if state.scan_sizes:  # the true trigger's preview alone (from embedding) waits for a scan
            self.add_class("scanning")
            paint_scan(self, state)
        self.set_class(bool(state.discrepancy.x), "discrepancy")
        evaluated = state.acc_series.x or any(series.x for series in state.retention.values())
        self.set_class(not evaluated, "no-acc")
        if state.discrepancy.x:
            paint_discrepancy(self.query_one("#disc-plot", DiscrepancyPlot), state, self.plotted)
        compared = state.comparison
        self.set_class(compared.shown, "comparison")
        for kind in COMPARED_KINDS:  # what is compared, for a style or a test to tell
            self.set_class(compared.kind == kind, kind)
        if compared.shown:
            self.query_one("#comparison-plot", ComparisonPlot).paint(compared, self.plotted)
        log = self.query_one("#log", EventLog)
        for line in state.take_log():
            log.write_line(line)

    def reset(self) -> None:
        """Forget everything shown (replay's backward seek rebuilds from the start)."""
        self.plotted.clear()
        self.texts.clear()
        self.query_one("#log", EventLog).clear()
        self.remove_class("scanning", "discrepancy", "no-acc", "comparison", *COMPARED_KINDS)
        for i in range(2):
            view = self.query_one(f"#preview-{i}", ImageView)
            view.border_title = None
            view.show(None)

    def _text(self, selector: str, text: str) -> None:
        """Update a line only when it changed: every update costs the UI thread a relayout."""
        if self.texts.get(selector) != text:
            self.texts[selector] = text
            self.query_one(selector, Static).update(text)

    def _plot(self, selector: str, lines: list[tuple[str, Series, str]], state: Any) -> None:
        plot_lines(self.query_one(selector, PlotWidget), state, lines, self.plotted)


def paint_scan(screen: Any, state: DashboardState) -> None:
    """Per-class perturbation sizes; the outlier in red, the flag lines in yellow, and
    the previous scan's bars (another model's) in grey beside them."""
    bars = screen.query_one("#bars", PlotWidget)
    bars.clear()
    if state.scan_sizes:
        classes = sorted(state.scan_sizes)
        previous = state.previous_scan
        outlier = state.scan_outlier()
        styles = [
            "red" if c == outlier else ("green" if c in state.scan_done else "grey50")
            for c in classes
        ]
        lines = [
            (state.scan_threshold, "yellow", "threshold T"),
            (state.flag_line(), "bright_yellow", "MAD index 2"),
        ]
        bars.border_subtitle = legend(
            [(label, style) for value, style, label in lines if value is not None and value > 0]
        )
        values = [*state.scan_sizes.values(), *previous.values()]
        top = max([*values, *(v for v, _, _ in lines if v is not None)])
        right = max([*classes, *previous]) + 0.6
        bars.set_ylimits(0, top * 1.1 or 1.0)
        bars.set_xlimits(-0.6, right)
        bars.set_xticks(classes if len(classes) <= 12 else nice_ticks(max(classes)))
        for value, style, label in lines:  # drawn first so the bars stay whole
            if value is not None and value > 0:
                bars.plot(
                    [-0.6, right],
                    [value] * 2,
                    line_style=style,
                    hires_mode=HiResMode.BRAILLE,
                    label=label,
                )
        shift, width = (0.2, 0.35) if previous else (0.0, 0.5)
        if previous:
            old = sorted(previous)
            bars.bar(
                [c - shift for c in old],
                [previous[c] for c in old],
                width=width,
                bar_style="grey37",
                hires_mode=HiResMode.QUADRANT,
            )
            bars.border_title = f"{state.previous_scan_name} (grey) vs {state.scan_name}"
        bars.bar(
            [c + shift for c in classes],
            [state.scan_sizes[c] for c in classes],
            width=width,
            bar_style=styles,
            hires_mode=HiResMode.QUADRANT,
        )
    for i, (name, image) in enumerate(shown_previews(state.previews)):
        view = screen.query_one(f"#preview-{i}", ImageView)
        view.border_title = name
        view.show(image)


def paint_discrepancy(
    plot: DiscrepancyPlot, state: DashboardState, plotted: dict[str, tuple[object, ...]]
) -> None:
    """The distillation's discrepancy per epoch and its second difference, the threshold
    Delta0/10 across the plot once known and a red line at the epoch the rule stopped at;
    the title says the epoch (or where it stopped), the legend is in the bottom border. The
    y axis is :class:`SymlogAxis`: on a linear one the second difference and the threshold
    (a tenth of the early second differences) lie on the floor, under a discrepancy near 1."""
    disc, second = state.discrepancy, state.second_diff
    threshold, stop = state.disc_threshold, state.truncated_at
    # the planned epochs while it runs; once stopped, the epochs it ran (and a margin for
    # the marker): the title still says how many were planned
    upper = max(state.disc_epochs, state.disc_epoch, 1)
    if stop is not None:
        upper = min(upper, stop + max(1, math.ceil(stop / 4)))
    drawn = (upper, id(disc), len(disc.x), len(second.x), threshold, stop)
    if plotted.get(str(plot.id)) == drawn:
        return
    plotted[str(plot.id)] = drawn
    plot.clear()
    finite = [v for v in (*disc.y, *second.y, threshold or 0.0) if math.isfinite(v)]
    # linear up to a decade below the threshold (before it, the smallest second difference):
    # a second difference near the threshold then stands clear of 0 and of the line
    sizes = [abs(v) for v in (*second.y, *disc.y) if v and math.isfinite(v)]
    base = abs(threshold) if threshold and math.isfinite(threshold) else min(sizes, default=10.0)
    axis = SymlogAxis(10.0 ** (math.floor(math.log10(base)) - 1))
    plot.set_y_formatter(axis)
    low, high = axis.to_axis(min(0.0, *finite)), axis.to_axis(max(0.0, *finite))
    pad = max(high - low, 1.0) * 0.05  # the lowest and highest points are not on the frame
    plot.set_ylimits(low - pad, high + pad)
    plot.set_yticks(axis.get_ticks(low - pad, high + pad))
    plot.set_xlimits(0, upper)

    def scaled(values: list[float]) -> list[float]:
        return [axis.to_axis(v) for v in values]

    latest = f"epoch {state.disc_epoch}/{state.disc_epochs} · D {disc.y[-1]:.3g}"
    plot.border_title = f"stopped at {latest}" if stop is not None else latest
    lines = [("discrepancy", disc), ("2nd diff", second)]
    entries = [(label, DISC_STYLES[label]) for label, series in lines if series.x]
    # the marker first, as a line of dots: the points it crosses (the truncated epoch's own,
    # the one that matters) are drawn over it, where a v-line would hide them
    if stop is not None:
        edges = [low - pad, high + pad]
        plot.plot([stop] * 2, edges, line_style=DISC_STYLES["stop"], hires_mode=BRAILLE)
    if threshold is not None:
        entries.append(("Δ0/10", DISC_STYLES["Δ0/10"]))
        style = DISC_STYLES["Δ0/10"]
        plot.plot([0, upper], scaled([threshold] * 2), line_style=style, hires_mode=BRAILLE)
    short = [("D" if label == "discrepancy" else label, style) for label, style in entries]
    plot.upper, plot.legends = upper, (legend(entries), legend(short))
    plot.fit_width(plot.size.width)
    for label, series in lines:
        style = DISC_STYLES[label]
        if len(series.x) == 1:
            plot.scatter(series.x, scaled(series.y), marker_style=style, hires_mode=BRAILLE)
        elif series.x:
            plot.plot(series.x, scaled(series.y), line_style=style, hires_mode=BRAILLE)


def plot_lines(
    plot: PlotWidget,
    state: DashboardState,
    lines: list[tuple[str, Series, str]],
    plotted: dict[str, tuple[object, ...]],
) -> None:
    # The x axis spans the whole planned run, so the line grows left to right.
    upper = state.x_upper
    drawn: tuple[object, ...] = (upper, plot.size.width, tuple(state.phase_starts))
    drawn += tuple((label, id(series), len(series.x)) for label, series, _ in lines)
    if plotted.get(str(plot.id)) == drawn:
        return  # nothing new (the accuracy plot, between evaluations): skip a relayout
    plotted[str(plot.id)] = drawn
    plot.clear()
    plot.set_xlimits(0, upper)
    plot.set_xticks(nice_ticks(upper, most=4 if plot.size.width < 60 else 8))
    plot.border_subtitle = legend([(label, style) for label, series, style in lines if series.x])
    for label, series, style in lines:
        if len(series.x) == 1:  # a line needs two points: show the first reading as a dot
            hires = HiResMode.BRAILLE
            plot.scatter(series.x, series.y, marker_style=style, hires_mode=hires, label=label)
        elif series.x:
            plot.plot(
                series.x, series.y, line_style=style, hires_mode=HiResMode.BRAILLE, label=label
            )
    for start in state.phase_starts[1:]:
        plot.add_v_line(start, "grey50")
