"""``wmtui replay`` and ``wmtui serve``: watch a recorded run, or any session, elsewhere.

    wmtui replay RUN [--speed 1|4|16] [--refresh HZ]
    wmtui serve [--host 127.0.0.1] [--port 8000] [--replay RUN | --scenario NAME]
                [--public-url URL] [-- options of the served command]

``replay`` plays ``RUN/events.jsonl`` in the same dashboard as the playground. ``serve``
runs the playground (or a replay) behind textual-serve: every browser tab gets its own
process. Textual and textual-serve are imported only inside the commands, so the headless
commands never load them; bad input is one line and exit 2 before anything starts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from engine.errors import UserError

if TYPE_CHECKING:
    from textual_serve.server import Server

REPLAY, SERVE = "replay", "serve"
SCENARIO = "scenario"
SPEEDS = (1, 4, 16)
#: how long a stopped server waits for its tabs (each stops its worker within ~1 s)
TAB_STOP_S = 1.6
EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}
EXPOSED = (
    "wmtui: warning: serving on {host}: anyone who can reach this port can watch and steer "
    "the session (use --host 127.0.0.1 and an SSH tunnel to keep it private)"
)


def register(app: typer.Typer) -> None:
    """Add ``replay`` and ``serve`` to ``app``; a second call is a no-op."""
    if any(info.name == REPLAY for info in app.registered_commands):
        return
    from wmtui.cli.common import guarded

    app.command(REPLAY)(guarded(replay))
    app.command(SERVE, context_settings=EXTRA_ARGS)(guarded(serve))
    import wmtui.cli.attach as attach

    attach.register(app)  # the live sibling of replay


# -- replay ---------------------------------------------------------------------------------
def replay(
    run_dir: Annotated[
        Path, typer.Argument(metavar="RUN", help="run directory holding events.jsonl")
    ],
    speed: Annotated[
        float, typer.Option("--speed", metavar="X", help="recorded seconds per second: 1, 4 or 16")
    ] = 1.0,
    refresh: Annotated[
        float, typer.Option("--refresh", metavar="HZ", help="repaints per second (1-10)")
    ] = 4.0,
) -> None:
    """Play a recorded run in the dashboard (space pauses, 1/4/6 set the speed, ←/→ seek)."""
    check_replay_options(speed, refresh)
    from wmtui.tui.replay import ReplaySession

    session = ReplaySession(run_dir, speed)  # reads and checks the whole recording now
    from wmtui.tui.replay_app import ReplayApp

    app_ = ReplayApp(lambda: session, refresh=refresh)
    app_.run()
    if app_.exit_message:
        typer.echo(app_.exit_message, err=True)


def check_replay_options(speed: float, refresh: float) -> None:
    if speed not in SPEEDS:
        raise UserError(f"--speed must be one of {', '.join(map(str, SPEEDS))}, got {speed:g}")
    if not 1.0 <= refresh <= 10.0:
        raise UserError(f"--refresh must be between 1 and 10, got {refresh:g}")


# -- serve ----------------------------------------------------------------------------------
def serve(
    ctx: typer.Context,
    host: Annotated[
        str,
        typer.Option(
            "--host", metavar="HOST", help="address to listen on (only this machine by default)"
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="TCP port (1-65535)")] = 8000,
    replay_run: Annotated[
        Path | None,
        typer.Option("--replay", metavar="RUN", help="serve a replay of RUN instead of training"),
    ] = None,
    scenario: Annotated[
        str | None,
        typer.Option(
            "--scenario", metavar="NAME", help="serve the scenario NAME", show_default=False
        ),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            metavar="NAME",
            help="serve the matrix view of recipe NAME's run (-- --out DIR --scale S)",
            show_default=False,
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            metavar="URL",
            help="the address browsers use, when it differs from --host",
        ),
    ] = None,
) -> None:
    """Serve the playground (or a replay) to web browsers; each tab gets its own session.

    Options after `--` are passed to the served command (e.g. -- --dataset synthetic).
    """
    args = served_args(replay_run, scenario, list(ctx.args), recipe)
    prepare_server(host, port, args, public_url).serve()


def served_args(
    replay_run: Path | None, scenario: str | None, extra: list[str], recipe: str | None = None
) -> list[str]:
    """The wmtui arguments each browser tab runs; a bad recording fails here, not in a tab."""
    if sum(x is not None for x in (replay_run, scenario, recipe)) > 1:
        raise UserError("--replay, --scenario and --recipe exclude each other; choose one")
    if recipe is not None:
        return [*recipe_args(recipe), *extra]
    if replay_run is not None:
        from wmtui.tui.replay import ReplaySession

        ReplaySession(replay_run)  # validates the recording up front
        return [REPLAY, str(replay_run.resolve()), *extra]
    if scenario is not None:
        return [*scenario_args(scenario), *extra]
    return ["tui", *extra] if extra else []  # no options: the start screen, as `wmtui`


def recipe_args(name: str) -> list[str]:
    """``reproduce NAME --no-run --tui``: each tab watches the recipe's folder (the run itself
    is one process of its own, never one per tab); an unknown name is one line here."""
    from engine.studies.recipe_file import load_recipe

    source = Path(name)
    if source.suffix == ".toml" and source.is_file():
        name = str(source.resolve())
    recipe = load_recipe(name)
    if recipe.matrix is None:
        raise UserError(
            f"--recipe {name}: it has no [matrix] table to show; serve the sweep or run it"
        )
    return ["reproduce", name, "--no-run", "--tui"]


def scenario_args(name: str) -> list[str]:
    """``tui --scenario NAME``; an unknown scenario is one line here rather than a dead tab
    in every browser, and a file is made absolute (the tab's process may start elsewhere)."""
    from engine.studies.scenarios import load_scenario, scenario_source

    source = scenario_source(name)  # the same rule as --scenario: a folder never hides a preset
    if not source.preset:
        name = str(Path(source.location).resolve())
    load_scenario(name)
    return ["tui", "--scenario", name]


def prepare_server(host: str, port: int, args: list[str], public_url: str | None) -> Server:
    """Check the address, warn when it is reachable from elsewhere, build (not start) the server."""
    if not 1 <= port <= 65535:
        raise UserError(f"--port must be between 1 and 65535, got {port}")
    if not host.strip():
        raise UserError("--host must not be empty")
    warning = exposure_warning(host)
    if warning:
        typer.echo(warning, err=True)
    name = " ".join(["wmtui", *args[:2]])
    return stopping_server()(
        serve_command(args), host=host, port=port, title=name, public_url=public_url
    )


def stopping_server() -> type[Server]:
    """textual-serve's Server, but SIGTERM, SIGHUP and Ctrl-C stop every tab's session
    cleanly and end the server within 2 s: its own handling only stops listening and waits
    for the browsers to close (40 s), and a SIGHUP left the tabs running on their own."""
    import asyncio
    import signal

    from textual_serve.server import Server

    class StoppingServer(Server):
        def serve(self, debug: bool = False) -> None:
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)  # the one Server.serve picks up

            def take_the_signals() -> None:  # after Server.serve set its own handlers
                for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                    loop.add_signal_handler(signum, stop_tabs_and_leave, signum)

            loop.call_soon(take_the_signals)
            super().serve(debug)

    return StoppingServer


def stop_tabs_and_leave(signum: int) -> None:
    """Pass the signal on to every tab (each stops its worker, which completes its run
    folder), wait for them, then end the server with the signal's status."""
    import os
    import signal

    from engine import stopping
    from wmtui.signals import leave

    stopping.note_signal(signal.Signals(signum).name)
    tabs = descendants(os.getpid())
    for pid in tabs:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + TAB_STOP_S
    while any(running(pid) for pid in tabs) and time.monotonic() < deadline:
        time.sleep(0.05)
    leave(128 + signum)


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (a tab's shell and the wmtui it runs), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def is_loopback(host: str) -> bool:
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[] ")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to an outside interface


def exposure_warning(host: str) -> str | None:
    return None if is_loopback(host) else EXPOSED.format(host=host)


def wmtui_executable() -> list[str]:
    """This installation's ``wmtui`` script, so the tabs run the same Python and version."""
    script = Path(sys.executable).with_name("wmtui")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "wmtui.cli"]


def serve_command(args: list[str]) -> str:
    """The shell command textual-serve starts per tab (it runs it through the shell)."""
    from wmtui.cli.common import DEBUG

    debug = ["--debug"] if DEBUG["on"] else []
    return shlex.join([*wmtui_executable(), *debug, *args])
