"""A recipe's matrix in its report: the heatmap of schemes against attacks, and per attack the
plane of test accuracy against watermark accuracy (the SoK's Pareto view).

Only for a recipe whose file declares a ``[matrix]`` table (:mod:`engine.studies.recipe_matrix`):
the table itself is read from the recipe file the run's manifest names, the numbers from
``recipe.json``'s cells and the trials' attack phases. The heatmap is drawn twice: as an HTML
table (each cell coloured by its removed-rate, its value written in it: readable without the
figure, searchable, and what a browser test finds) and as a figure saved beside the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter

from engine.errors import UserError
from engine.reports.collect import RecipeData
from engine.reports.figures import WIDTH, new_figure
from engine.reports.html import esc, figure, fmt, table
from engine.runs import RunDir
from engine.studies.grid import value_label
from engine.studies.recipe_matrix import (
    CLAIMS_TABLE,
    Matrix,
    MatrixTable,
    matrix_from_mapping,
    matrix_table,
    removed_fraction,
)

HEATMAP, PARETO = "matrix-heatmap", "matrix-pareto"
SECTION = ("matrix", "Matrix")
#: at most this many attacks' planes (a panel each) in the Pareto figure
PANELS_PER_ROW = 5


def recipe_matrix(data: RecipeData) -> Matrix | None:
    """The ``[matrix]`` table of the recipe this run reproduced, or None (no such table, or
    the recipe file is gone: the report is still written, without the matrix)."""
    try:
        manifest = RunDir(data.path).manifest()
        from engine.studies import presets

        raw = presets.resolve("recipe", str(manifest.get("source") or "")).read()
    except (UserError, OSError, ValueError):
        return None
    if not isinstance(raw, Mapping) or "matrix" not in raw:
        return None
    try:
        return matrix_from_mapping(raw["matrix"], str(manifest.get("source")))
    except UserError:
        return None


# -- figures -----------------------------------------------------------------------------------
def colour(fraction: float | None) -> str:
    """White (kept) to red (removed); grey for a cell with no value yet."""
    if fraction is None or not math.isfinite(fraction):
        return "#e2e8f0"
    f = min(max(fraction, 0.0), 1.0)
    kept, removed = (255, 255, 255), (197, 48, 48)
    r, g, b = (round(k + (v - k) * f) for k, v in zip(kept, removed, strict=True))
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap_figure(matrix: Matrix, table: MatrixTable) -> Figure | None:
    if not table.rows or not table.columns:
        return None
    height = max(2.0, 0.32 * len(table.rows) + 1.8)
    width = max(WIDTH, 0.32 * len(table.columns) + 2.0)
    fig = new_figure(height)
    fig.set_size_inches(width, height)
    ax = fig.add_subplot()
    grid = [
        [_nan(removed_fraction(table.value(r, c, matrix.colour), matrix)) for c in table.columns]
        for r in table.rows
    ]
    image = ax.imshow(grid, cmap="Reds", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=90, fontsize=7)
    ax.set_yticks(range(len(table.rows)), table.rows, fontsize=7)
    for i, row in enumerate(table.rows):
        for j, column in enumerate(table.columns):
            value = table.value(row, column, matrix.colour)
            if value is not None:
                dark = (removed_fraction(value, matrix) or 0.0) > 0.6
                text = f"{value:.0f}"
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if dark else "black",
                )
    bar = fig.colorbar(image, ax=ax, label=matrix.colour, shrink=0.8)
    bar.ax.yaxis.set_major_formatter(PercentFormatter(1.0))  # as the cells read: 0-100
    ax.set_title(f"{matrix.colour}: {matrix.rows} × {matrix.columns}", fontsize=9)
    return fig


def pareto_points(
    matrix: Matrix, trials: list[dict[str, Any]]
) -> dict[str, dict[str, tuple[float, float, bool | None]]]:
    """Per column (attack), per row (scheme): the mean test accuracy and watermark accuracy
    after the attack over the trials that have both, and whether most were removed."""
    sums: dict[tuple[str, str], list[tuple[float, float, Any]]] = {}
    for trial in trials:
        params = trial.get("params") or {}
        if matrix.rows not in params or matrix.columns not in params:
            continue
        phase = next((p for p in trial.get("_phases", []) if p.get("name") == matrix.phase), None)
        if phase is None:
            continue
        acc, wm = phase.get("test_acc"), phase.get("wm_accuracy")
        if not isinstance(acc, int | float) or not isinstance(wm, int | float):
            continue
        key = (value_label(params[matrix.columns]), value_label(params[matrix.rows]))
        sums.setdefault(key, []).append((float(acc), float(wm), phase.get("removed")))
    points: dict[str, dict[str, tuple[float, float, bool | None]]] = {}
    for (column, row), values in sums.items():
        removed = [v for _, _, v in values if isinstance(v, bool)]
        points.setdefault(column, {})[row] = (
            sum(a for a, _, _ in values) / len(values),
            sum(w for _, w, _ in values) / len(values),
            (2 * sum(removed) >= len(removed)) if removed else None,
        )
    return points


def pareto_figure(points: dict[str, dict[str, tuple[float, float, bool | None]]]) -> Figure | None:
    if not points:
        return None
    columns = list(points)
    per_row = min(PANELS_PER_ROW, len(columns))
    rows = math.ceil(len(columns) / per_row)
    fig = new_figure(1.7 * rows + 0.6)
    axes = fig.subplots(rows, per_row, squeeze=False, sharex=True, sharey=True)
    for index, ax in enumerate(axes.flat):
        if index >= len(columns):
            ax.set_visible(False)
            continue
        column = columns[index]
        for row, (acc, wm, removed) in points[column].items():
            marker = {True: ("#c53030", "x"), False: ("#2f855a", "o"), None: ("#718096", ".")}
            tint, shape = marker[removed]
            ax.scatter([acc * 100], [wm * 100], color=tint, marker=shape, s=18)
            ax.annotate(
                row, (acc * 100, wm * 100), fontsize=5, xytext=(2, 2), textcoords="offset points"
            )
        ax.set_title(column, fontsize=7)
        ax.tick_params(labelsize=6)
    fig.supxlabel("test accuracy after the attack (%)", fontsize=8)
    fig.supylabel("watermark accuracy after (%)", fontsize=8)
    return fig


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


# -- the section -------------------------------------------------------------------------------
def matrix_table_of(data: RecipeData, matrix: Matrix) -> MatrixTable:
    return matrix_table(matrix, data.cells, data.trials)


def heatmap_html(matrix: Matrix, table: MatrixTable) -> str:
    """The matrix as an HTML table: each cell coloured by the colour metric, its value and
    the other metrics written in it."""
    if not table.rows:
        return "<p class='empty'>No matrix cell has been measured yet.</p>"
    head = "".join(f"<th scope='col'>{esc(c)}</th>" for c in table.columns)
    body = []
    for row in table.rows:
        cells = []
        for column in table.columns:
            value = table.value(row, column, matrix.colour)
            shade = colour(removed_fraction(value, matrix))
            others = [
                f"{m.name} {fmt(table.value(row, column, m.name))}{m.unit}"
                for m in matrix.metrics
                if m.name != matrix.colour
            ]
            unit = matrix.metric(matrix.colour).unit
            shown = "–" if value is None else f"{value:.0f}{unit}"
            if table.not_applicable(row, column, matrix.colour):
                shown = "n/a"  # every trial finished; the referee could not judge it
            title = esc(f"{row} × {column}: " + ", ".join([f"{matrix.colour} {shown}", *others]))
            cells.append(f"<td style='background:{shade}' title='{title}'>{esc(shown)}</td>")
        body.append(f"<tr><th scope='row'>{esc(row)}</th>{''.join(cells)}</tr>")
    return (
        f"<div class='matrix-scroll'><table id='{HEATMAP}' class='matrix'>"
        f"<thead><tr><th>{esc(matrix.rows)} \\ {esc(matrix.columns)}</th>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def claims_html(cells: list[dict[str, Any]]) -> str:
    claims = [c for c in cells if c.get("table") == CLAIMS_TABLE]
    if not claims:
        return ""
    rows = []
    for c in claims:
        mean = c.get("mean")
        state = "not measured yet" if mean is None else ("holds" if mean >= 50 else "does not hold")
        rows.append([esc(c.get("name", "")), esc(c.get("paper_text", "")), esc(state)])
    return "<h3>The paper's findings, on this matrix</h3>" + table(
        ["finding", "the paper", "here"], rows
    )


def matrix_section(data: RecipeData, matrix: Matrix, svgs: dict[str, str]) -> str:
    table_ = matrix_table_of(data, matrix)
    pareto_caption = (
        f"Per {matrix.columns}: test accuracy against watermark accuracy after it, one point "
        f"per {matrix.rows} (x: removed in most seeds, o: kept), the SoK's Pareto view"
    )
    return (
        f"<section id='{SECTION[0]}'><h2>Matrix: {esc(matrix.rows)} × {esc(matrix.columns)}</h2>"
        f"<p>Each cell: {esc(matrix.colour)} over the seeds (white: kept, red: removed); "
        "hover a cell for its other numbers.</p>"
        f"<style>.matrix-scroll{{overflow-x:auto}}table.matrix td{{text-align:center;"
        f"font-size:0.8em;min-width:2.5em}}table.matrix th{{font-size:0.75em}}</style>"
        f"{heatmap_html(matrix, table_)}"
        f"{claims_html(data.cells)}"
        f"{figure(svgs, HEATMAP, 'The matrix as a figure (also in figures/)')}"
        f"{figure(svgs, PARETO, pareto_caption)}"
        "</section>"
    )


def matrix_figures(data: RecipeData, matrix: Matrix) -> dict[str, Figure]:
    made: dict[str, Figure] = {}
    heat = heatmap_figure(matrix, matrix_table_of(data, matrix))
    if heat is not None:
        made[HEATMAP] = heat
    pareto = pareto_figure(pareto_points(matrix, data.trials))
    if pareto is not None:
        made[PARETO] = pareto
    return made
