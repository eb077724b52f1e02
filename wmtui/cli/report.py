"""``wmtui report``: one self-contained HTML report of a run, scenario, recipe or sweep folder.

    wmtui report RUN|SCENARIO|RECIPE|SWEEP --out report.html [--open] [--json]

The page holds the configuration and versions, the accuracy / retention / loss curves across
phases, each scan's bars with its decision line, the true and reversed triggers, the key's
verification statistics, the phases' headline numbers and, for a recipe, the comparison with
the paper, cell by cell; for a sweep, mean ± sd over seeds per configuration (a table and a
bar chart), every trial's row and the first completed trial in full. Figures are inline SVG
(also written as ``figures/NAME.svg`` and ``.pdf`` beside the page), pictures are data:
PNGs: the file opens offline. The engine side (matplotlib included) is imported only when
the command runs, so other commands start as fast as before. Bad input is one line and exit
2, with nothing written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from wmtui.cli.flags import JsonFlag

COMMAND = "report"


def register(app: typer.Typer) -> None:
    """Add ``report`` to ``app``; a second call is a no-op."""
    if any(info.name == COMMAND for info in app.registered_commands):
        return
    from wmtui.cli.common import guarded

    app.command(COMMAND)(guarded(report))


def report(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="RUN|SCENARIO|RECIPE|SWEEP",
            help="a run, scenario, recipe or sweep output folder",
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="the HTML file to write (figures/ goes beside it)", show_default=False
        ),
    ],
    open_: Annotated[
        bool, typer.Option("--open", help="print the report's path, to open in a browser")
    ] = False,
    json_mode: JsonFlag = False,
) -> None:
    """Write an HTML report of a run, a scenario, a recipe or a sweep (offline: no network)."""
    from engine.reports import make_report

    written, figures = make_report(source, out)
    path = out.resolve()
    if json_mode:
        row = {
            "event": "report",
            "path": str(path),
            "kind": written.kind,
            "title": written.title,
            "figures": [str(f.resolve()) for f in figures],
        }
        typer.echo(json.dumps(row))
    elif open_:
        typer.echo(str(path))
    if not json_mode:
        shown = len(figures) // 2
        typer.echo(f"report of {written.kind} {source}: {path} ({shown} figures)", err=True)
