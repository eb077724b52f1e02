"""What the dashboard's plots share: a plot that never takes focus, tick spacing for narrow
plots, the legend for a plot's bottom border, and the accuracy axis's floor."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.css.query import NoMatches
from textual_plot import PlotWidget
from textual_plot.axis_formatter import NumericAxisFormatter

#: the accuracy plot's floor, below 0: a retention near 0 (0.65% after removal) is drawn
#: above the x axis instead of on it, where it could not be seen
ACC_FLOOR = -8.0


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


class FittedXAxis(NumericAxisFormatter):
    """x tick labels that end inside the plot: a label centred on a tick near the right edge
    ran past it and was cut ("2000" read "200"). Such a label is written short ("2k") or,
    when even that does not fit, left out; the tick mark stays."""

    def __init__(self, plot: PlotWidget) -> None:
        super().__init__()
        self.plot = plot

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        labels = [f"{tick:g}" for tick in ticks]
        try:
            width = self.plot.query_one("#margin-bottom").size.width
        except NoMatches:
            return labels
        return [self._fitted(tick, f"{tick:g}", width) for tick in ticks]

    def _fitted(self, tick: float, label: str, width: int) -> str:
        x_max = getattr(self.plot, "_x_max", None)  # that tick's label is right-aligned
        if width <= 0 or (x_max is not None and tick >= x_max):
            return label
        x, _ = self.plot.get_pixel_from_coordinate(tick, 0.0)
        x += self.plot.margin_left
        for text in (label, short_number(tick)):
            half, odd = divmod(len(text), 2)
            last = x - half + (0 if odd else 1) + len(text) - 1  # as the canvas centres it
            if last <= width - 1:
                return text
        return ""


class LivePlot(PlotWidget):
    """A plot that never takes focus, so its zoom/pan keys don't shadow the app's, and
    whose x labels are never cut (:class:`FittedXAxis`)."""

    can_focus = False

    def on_mount(self) -> None:
        self.set_x_formatter(FittedXAxis(self))


def legend(entries: list[tuple[str, str]]) -> Text | None:
    """A one-line legend for a plot's bottom border: ``━ test acc ━ key``, each mark in its
    line's colour. In the border it covers no data (a legend box in the plot hid half of it
    at 80x24) and, with nothing drawn yet, it is not there at all."""
    if not entries:
        return None
    text = Text()
    for i, (label, style) in enumerate(entries):
        text.append(" ━ " if i == 0 else "  ━ ", style=style)
        text.append(label)
    return text + " "


def short_number(value: float) -> str:
    """``2k``, ``1.5k``, ``12M``: a tick label in fewer columns (``2000`` reads the same)."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"
