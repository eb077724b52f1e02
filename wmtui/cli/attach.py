"""``wmtui attach RUN``: watch a running run's dashboard from anywhere that sees its folder.

    wmtui attach runs/classic-20260101-120000 [--refresh HZ]

Follows ``RUN/events.jsonl`` as the run appends to it (a headless ``wmtui run`` or
``train`` started with ``nohup`` or under tmux, a sweep's trial, a playground in another
terminal), showing the dashboard live until the run ends; ctrl+q detaches and the run goes
on. Nothing is sent to the run. A folder without events is one line and exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from engine.errors import UserError

COMMAND = "attach"


def register(app: typer.Typer) -> None:
    """Add ``attach`` to ``app``; a second call is a no-op."""
    if any(info.name == COMMAND for info in app.registered_commands):
        return
    from wmtui.cli.common import guarded

    app.command(COMMAND)(guarded(attach))


def attach(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN", help="run folder whose events.jsonl to follow")
    ],
    refresh: Annotated[
        float, typer.Option("--refresh", metavar="HZ", help="repaints per second (1-10)")
    ] = 2.0,
) -> None:
    """Watch a run live from another terminal or SSH login (ctrl+q detaches; the run goes on)."""
    if not 1.0 <= refresh <= 10.0:
        raise UserError(f"--refresh must be between 1 and 10, got {refresh:g}")
    from wmtui.tui.follow import FollowSession

    session = FollowSession(run_dir)  # no events.jsonl: one line, before any screen
    from wmtui.tui.attach_app import AttachApp

    app_ = AttachApp(lambda: session, refresh=refresh)
    app_.run()
    if app_.exit_message:
        typer.echo(app_.exit_message, err=True)
