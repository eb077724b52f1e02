"""Build a report in memory, then write it: the HTML file and ``figures/NAME.svg|pdf``.

Everything is read and rendered before the first byte is written, so bad input (a missing
folder, a corrupt manifest, an ``--out`` that is a folder) leaves nothing behind; each file
is then written atomically (temp file + rename), the page last.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from engine.errors import RunError
from engine.reports.collect import RecipeData, RunData, SweepData, collect
from engine.reports.figures import (
    configs_figure,
    render,
    scan_figure,
    sweep_figure,
    timeline_figure,
)
from engine.reports.html import inline_svg, run_page, scan_name, sweep_name
from engine.reports.matrix_page import SECTION, matrix_figures, matrix_section, recipe_matrix
from engine.reports.recipe_cells import recipe_page
from engine.reports.sweep_page import CONFIGS_FIGURE, sweep_page
from engine.runs import atomic_write_bytes

FIGURES = "figures"
#: a report is meant to be shared (temp files are created 0600)
PUBLIC_MODE = 0o644


@dataclasses.dataclass
class Report:
    """A rendered report: the page, and each figure's standalone SVG and PDF by name."""

    kind: str  # "run" | "scenario" | "recipe" | "sweep"
    title: str
    page: str
    figures: dict[str, tuple[str, bytes]]


def build(source: Path) -> Report:
    """Read ``source`` and render its report; raises RunError on bad input."""
    data = collect(source)
    if isinstance(data, RecipeData):
        figures = run_figures(data.first, "trial-") if data.first is not None else {}
        matrix = recipe_matrix(data)
        if matrix is None:
            return Report("recipe", data.title, recipe_page(data, inline(figures)), figures)
        made = {name: render(fig) for name, fig in matrix_figures(data, matrix).items()}
        figures = {**made, **figures}
        svgs = inline(figures)
        extra = (*SECTION, matrix_section(data, matrix, svgs))
        return Report("recipe", data.title, recipe_page(data, svgs, extra), figures)
    if isinstance(data, SweepData):
        figures = run_figures(data.first, "trial-") if data.first is not None else {}
        made = configs_figure(data)
        if made is not None:
            figures = {CONFIGS_FIGURE: render(made), **figures}
        return Report("sweep", data.title, sweep_page(data, inline(figures)), figures)
    figures = run_figures(data, "")
    return Report(data.kind, data.title, run_page(data, inline(figures)), figures)


def run_figures(data: RunData, prefix: str) -> dict[str, tuple[str, bytes]]:
    """Every figure of a run, rendered: the curves, each scan's bars, each sweep."""
    out = {}
    if not data.timeline.empty:
        out[f"{prefix}curves"] = render(timeline_figure(data.timeline))
    for index, scan in enumerate(data.scans):
        out[scan_name(prefix, index, scan)] = render(scan_figure(scan))
    for index, (phase, rows) in enumerate(data.sweeps):
        made = sweep_figure(phase, rows)
        if made is not None:
            out[sweep_name(prefix, index, phase)] = render(made)
    return out


def inline(figures: dict[str, tuple[str, bytes]]) -> dict[str, str]:
    return {name: inline_svg(svg, name) for name, (svg, _) in figures.items()}


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot take the report, before anything is read or written."""
    if out.is_dir():
        raise RunError(f"--out {out} is a folder; give a file name, e.g. {out / 'report.html'}")
    for parent in (out.parent, *out.parent.parents):
        if parent.exists():
            if not parent.is_dir():
                raise RunError(f"--out {out}: {parent} is a file, not a folder")
            break
    if out.exists() and out.suffix.lower() not in (".html", ".htm"):
        raise RunError(f"--out {out}: refusing to replace a file that is not an HTML page")
    figures = out.parent / FIGURES
    if figures.exists() and not figures.is_dir():
        raise RunError(f"--out {out}: {figures} is a file; the figures go in a folder there")


def write(report: Report, out: Path) -> list[Path]:
    """The figures, then the page; returns the figure files written."""
    check_out(out)
    folder = out.parent / FIGURES
    files: list[tuple[Path, bytes]] = []
    for name, (svg, pdf) in report.figures.items():
        standalone = re.sub(r"\s*<metadata>.*?</metadata>", "", svg, count=1, flags=re.S)
        files += [(folder / f"{name}.svg", standalone.encode()), (folder / f"{name}.pdf", pdf)]
    for path, _ in files:
        if path.is_dir():
            raise RunError(f"cannot write {path}: a folder is in the way")
    written = []
    try:
        for path, payload in files:
            atomic_write_bytes(path, payload, mode=PUBLIC_MODE)
            written.append(path)
        atomic_write_bytes(out, report.page.encode("utf-8"), mode=PUBLIC_MODE)
    except OSError as exc:
        raise RunError(f"cannot write the report to {out}: {exc.strerror or exc}") from None
    return written


def make_report(source: Path, out: Path) -> tuple[Report, list[Path]]:
    """``wmtui report``: check ``out``, build the report of ``source``, write it."""
    check_out(out)
    report = build(source)
    return report, write(report, out)
