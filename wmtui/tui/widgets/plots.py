"""What the dashboard's plots share: a plot that never takes focus, tick spacing for narrow
plots, the legend for a plot's bottom border, and the accuracy axis's floor."""

from __future__ import annotations

from rich.text import Text
from textual_plot import PlotWidget

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


class LivePlot(PlotWidget):
    """A plot that never takes focus, so its zoom/pan keys don't shadow the app's."""

    can_focus = False


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
