"""A report's figures with matplotlib: curves across phases, scan bars, attack sweeps, and a
grid sweep's configurations side by side.

Figures are made with the object API (``Figure``, no pyplot): no global figure registry, no
GUI backend, safe off the main thread. Output is deterministic: text stays text in the SVG
(``svg.fonttype = none``), element ids are salted with a fixed string, and no dates go into
either file, so the same run always gives byte-identical figures.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.reports.collect import Scan, SweepData
from engine.reports.stream import Timeline

STYLE = {
    "svg.fonttype": "none",
    "svg.hashsalt": "wmtui-report",
    "pdf.fonttype": 42,
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
}
ACCURACY = "#2b6cb0"  # test accuracy
RETENTION = ("#c53030", "#dd6b20", "#805ad5", "#2f855a", "#b7791f", "#d53f8c")
LOSS = "#4a5568"
BAR, FLAGGED, PREVIOUS = "#4a90c2", "#c53030", "#a0aec0"
MAD_LINE, THRESHOLD = "#b7791f", "#805ad5"
WIDTH = 7.5  # inches: the page's column at 96 dpi is about 720 px


@contextmanager
def style() -> Iterator[None]:
    with matplotlib.rc_context(STYLE):
        yield


def new_figure(height: float) -> Figure:
    figure = Figure(figsize=(WIDTH, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def render(figure: Figure) -> tuple[str, bytes]:
    """The figure as SVG text and as PDF bytes, both without dates."""
    with style():
        svg = io.BytesIO()
        figure.savefig(svg, format="svg", metadata={"Date": None})
        pdf = io.BytesIO()
        figure.savefig(pdf, format="pdf", metadata={"CreationDate": None, "ModDate": None})
    return svg.getvalue().decode("utf-8"), pdf.getvalue()


# -- curves across phases ----------------------------------------------------------------------
def timeline_figure(timeline: Timeline) -> Figure:
    """Test accuracy and every key set's retention (%) above, loss below, on the x axis that
    runs across phases; a dashed line and the phase's name mark each boundary."""
    with style():
        figure = new_figure(5.2)
        top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 2])
        colours = iter(RETENTION * 4)
        for name, segments in timeline.accuracy.items():
            colour = ACCURACY if name == "test accuracy" else next(colours)
            _segments(top, segments, colour, name, marker="o" if _sparse(segments) else "")
        _segments(bottom, timeline.loss, LOSS, "loss")
        top.set_ylabel("%")
        top.set_ylim(-5, 105)  # a retention near 0 stays visible, as in the playground
        bottom.set_ylabel("loss")
        bottom.set_xlabel("step (across phases)")
        if timeline.accuracy:  # below the plots: never over a curve
            figure.legend(*top.get_legend_handles_labels(), loc="outside lower center", ncols=4)
        low, high = top.get_xlim()
        for x, label in timeline.boundaries:
            for axes in (top, bottom):
                axes.axvline(x, color="#718096", linestyle="--", linewidth=0.8)
            right = x > low + 0.75 * (high - low)  # near the right edge: the name goes left
            top.annotate(
                label,
                (x, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-3 if right else 3, -2),
                textcoords="offset points",
                ha="right" if right else "left",
                va="top",
                fontsize=8,
                color="#2d3748",
            )
        top.set_title("test accuracy and watermark retention", loc="left")
    return figure


def _segments(
    axes: Axes,
    segments: list[list[tuple[float, float]]],
    colour: str,
    label: str,
    marker: str = "",
) -> None:
    shown = False
    for points in segments:
        if not points:
            continue
        xs, ys = zip(*points, strict=True)
        axes.plot(
            xs,
            ys,
            color=colour,
            linewidth=1.4,
            marker=marker,
            markersize=3,
            label=None if shown else label,
        )
        shown = True


def _sparse(segments: list[list[tuple[float, float]]]) -> bool:
    """Few points per phase: mark them, or a two-point phase reads as a mere line."""
    return all(len(points) <= 12 for points in segments)


# -- scan bars ---------------------------------------------------------------------------------
def scan_figure(scan: Scan) -> Figure:
    """Per-class sizes as bars, the flagged (else the smallest) class in red, the line a bar
    must fall below to be flagged (MAD index 2 and the gap), the threshold T where the rule
    uses one, and the previous scan's bars in grey beside (as the playground draws them)."""
    with style():
        figure = new_figure(3.4)
        axes = figure.subplots()
        classes = list(range(len(scan.sizes)))
        outlier = (
            scan.flagged if scan.flagged is not None else min(classes, key=scan.sizes.__getitem__)
        )
        previous = scan.previous.sizes if scan.previous is not None else None
        width, shift = (0.38, 0.2) if previous else (0.6, 0.0)
        tallest = max([*scan.sizes, *(previous or [])])
        if previous:
            axes.bar(
                [c - shift for c in range(len(previous))],
                previous,
                width,
                color=PREVIOUS,
                label=f"{scan.previous.name} (previous scan)",  # type: ignore[union-attr]
            )
        colours = [FLAGGED if c == outlier else BAR for c in classes]
        axes.bar([c + shift for c in classes], scan.sizes, width, color=colours, label=scan.name)
        lines = [(scan.flag_line, MAD_LINE, ":", "MAD index 2")]
        lines.append((scan.threshold, THRESHOLD, "--", "threshold T"))
        for value, colour, dash, label in lines:
            if value is None:
                continue
            if 0 <= value <= tallest * 1.5:
                axes.axhline(value, color=colour, linestyle=dash, linewidth=1.2, label=label)
            else:  # far off the bars' scale: say where, rather than squash the bars
                axes.plot([], [], color=colour, linestyle=dash, label=f"{label} = {value:.3g}")
        axes.set_xticks(classes)
        axes.set_xlabel("class")
        axes.set_ylabel(scan.size_kind)
        top = max(tallest, *(v for v, *_ in lines if v is not None and v <= tallest * 1.5))
        axes.set_ylim(0, top * 1.12 or 1.0)
        verdict = f"class {scan.flagged} flagged" if scan.flagged is not None else "none flagged"
        axes.set_title(f"{scan.name}: {verdict}", loc="left")
        figure.legend(*axes.get_legend_handles_labels(), loc="outside lower center", ncols=4)
    return figure


# -- attack sweeps -----------------------------------------------------------------------------
def sweep_figure(name: str, rows: list[dict]) -> Figure | None:
    """Test accuracy and retention (%) against the swept ratio (pruning); None when the rows
    hold nothing to plot."""
    points = [r for r in rows if isinstance(r, dict) and isinstance(r.get("ratio"), int | float)]
    if not points:
        return None
    with style():
        figure = new_figure(3.0)
        axes = figure.subplots()
        ratios = [float(r["ratio"]) for r in points]
        accuracy = [_pct(r.get("test_acc")) for r in points]
        axes.plot(ratios, accuracy, color=ACCURACY, marker="o", label="test accuracy")
        keys = sorted(
            {k for r in points if isinstance(r.get("retention"), dict) for k in r["retention"]}
        )
        for key, colour in zip(keys, RETENTION * 4, strict=False):
            values = [_pct((r.get("retention") or {}).get(key)) for r in points]
            axes.plot(ratios, values, color=colour, marker="o", label=f"retention {key}")
        axes.set_xlabel("ratio")
        axes.set_ylabel("%")
        axes.set_ylim(-5, 105)
        axes.set_title(f"{name}: sweep", loc="left")
        figure.legend(*axes.get_legend_handles_labels(), loc="outside lower center", ncols=4)
    return figure


def _pct(value: object) -> float:
    return 100 * float(value) if isinstance(value, int | float) else float("nan")


# -- a grid sweep's configurations -------------------------------------------------------------
#: at most this many metrics side by side per configuration
MAX_BARS = 6


def rate_metric(name: str) -> bool:
    """``ftb.test_acc``, ``ftb.retention.key``: a rate measured at the end of its phase (not
    the ``*_before`` copy an attack keeps of the model it started from)."""
    parts = name.split(".")
    return len(parts) >= 2 and parts[1] in ("test_acc", "retention")


def final_rates(metrics: list[str]) -> list[str]:
    """The rates of the last phase that measured any: what the sweep ended with."""
    rates = [m for m in metrics if rate_metric(m)]
    if not rates:
        return []
    last = rates[-1].split(".")[0]
    return [m for m in rates if m.split(".")[0] == last][:MAX_BARS]


def configs_figure(data: SweepData) -> Figure | None:
    """The last phase's test accuracy and retention (%) per configuration: the mean over
    seeds as a bar, ± one standard deviation as its error bar; None when there is none."""
    metrics = final_rates(data.metrics)
    configs = [c for c in data.configs if isinstance(c.get("metrics"), dict)]
    if not metrics or not configs:
        return None
    with style():
        figure = new_figure(3.4)
        axes = figure.subplots()
        width = 0.8 / len(metrics)
        colours = [ACCURACY if m.endswith(".test_acc") else "" for m in metrics]
        spare = iter(RETENTION * 4)
        colours = [c or next(spare) for c in colours]
        for index, (metric, colour) in enumerate(zip(metrics, colours, strict=True)):
            stats = [c["metrics"].get(metric) or {} for c in configs]
            means = [_pct(s.get("mean")) for s in stats]
            spread = [_pct(s.get("std")) if s.get("std") is not None else 0.0 for s in stats]
            xs = [x - 0.4 + width * (index + 0.5) for x in range(len(configs))]
            label = metric.split(".", 1)[1].replace("retention.", "retention ")
            axes.bar(xs, means, width, color=colour, label=label.replace("_", " "))
            axes.errorbar(xs, means, yerr=spread, fmt="none", ecolor="#1a202c", capsize=2)
        labels = [_short(str(c.get("label") or "all trials")) for c in configs]
        axes.set_xticks(range(len(configs)), labels, rotation=30 if len(configs) > 4 else 0)
        axes.set_ylabel("%")
        axes.set_ylim(0, 105)
        phase = metrics[0].split(".")[0]
        axes.set_title(f"after {phase}: mean ± sd per configuration", loc="left")
        figure.legend(*axes.get_legend_handles_labels(), loc="outside lower center", ncols=4)
    return figure


def _short(label: str, size: int = 28) -> str:
    return label if len(label) <= size else label[: size - 1] + "…"
