"""Reports: one self-contained HTML file per run, scenario, recipe or sweep folder.

``collect`` reads a folder into plain data (JSON files and trigger previews only; no key is
opened, nothing is unpickled), ``figures`` draws it with matplotlib, ``html`` lays out the page
(inline SVG, data: PNGs, inline CSS: it opens offline; ``sweep_page`` lays out a sweep's),
``build`` renders all of it in memory and writes it atomically beside
``figures/NAME.svg|pdf``::

    from engine.reports import make_report
    report, figures = make_report(Path("runs/classic-..."), Path("report.html"))
"""

from __future__ import annotations

from engine.reports.build import FIGURES, Report, build, check_out, make_report, write
from engine.reports.collect import RecipeData, RunData, SweepData, collect

__all__ = [
    "FIGURES",
    "RecipeData",
    "Report",
    "RunData",
    "SweepData",
    "build",
    "check_out",
    "collect",
    "make_report",
    "write",
]
