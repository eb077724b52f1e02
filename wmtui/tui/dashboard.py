"""What the dashboard paints from a :class:`DashboardState`: the accuracy, retention and
loss lines, the per-class scan bars with their flag lines, and the trigger previews. Shared by
the live app and replay; a repaint draws only what changed since the last one."""

from __future__ import annotations

from typing import Any

from textual_plot import HiResMode, PlotWidget

from wmtui.tui.state import DashboardState, Series
from wmtui.tui.widgets.image_view import ImageView


def nice_ticks(upper: float, most: int = 4) -> list[float]:
    """At most ``most`` ticks from 0 at a 1/2/5 x 10^k spacing: narrow plots stay legible."""
    if upper <= 0:
        return [0.0]
    spacing = 1.0
    while upper / spacing > most - 1:
        for factor in (2.0, 2.5, 2.0):  # 1 -> 2 -> 5 -> 10 ...
            spacing *= factor
            if upper / spacing <= most - 1:
                break
    return [i * spacing for i in range(int(upper // spacing) + 1)]


def shown_previews(previews: dict[str, Any]) -> list[tuple[str, Any]]:
    """The two images worth comparing: the true trigger beside the reversed one."""
    order = ["true trigger", "reversed-trigger"]

    def rank(item: tuple[str, Any]) -> int:
        return order.index(item[0]) if item[0] in order else len(order)

    return sorted(previews.items(), key=rank)[:2]  # stable: the others keep their order


class LivePlot(PlotWidget):
    """A plot that never takes focus, so its zoom/pan keys don't shadow the app's."""

    can_focus = False


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
