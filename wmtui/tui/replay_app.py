"""The dashboard in replay mode: the live app, driven by a :class:`ReplaySession`.

Everything the live app draws is reused; replay adds speed and seek keys, shows the replay
clock in the title (``REPLAY ×4 t=12.3/80.0 s``), and answers the keys that would steer a
live worker (learning rate, trigger, label, attack, scan, stop) with one log line instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.css.query import NoMatches
from textual.widgets import Log, Static

from engine import commands as cmd
from wmtui.tui.app import WmtuiApp
from wmtui.tui.replay import ReplaySession, Seek, SetSpeed
from wmtui.tui.screens.help import HelpScreen
from wmtui.tui.state import DashboardState

SEEK_SECONDS = 10.0

REPLAY_KEYS = [
    ("space", "pause / resume the replay"),
    ("1 4 6", "replay speed ×1, ×4, ×16"),
    ("← / [", f"back {SEEK_SECONDS:g} s (the dashboard is rebuilt)"),
    ("→ / ]", f"forward {SEEK_SECONDS:g} s"),
    ("ctrl+s", "save an SVG screenshot into the working directory"),
    ("ctrl+q", "quit"),
    ("?", "this help; escape closes it"),
]


class ReplayHelpScreen(HelpScreen):
    """The replay's keys: the live app's steering keys do nothing here."""

    def compose(self) -> ComposeResult:
        lines = "\n".join(f"{key:>8}  {text}" for key, text in REPLAY_KEYS)
        with Vertical():
            yield Static("wmtui replay keys\n\n" + lines, id="help-text")


def live_only_bindings() -> list[BindingType]:
    """The live app's steering keys, from its one table, kept bound but out of the footer:
    a key added to the live app is refused in replay by being marked live-only there."""
    return [
        Binding(b.key, b.action, show=False)
        for b in WmtuiApp.BINDINGS
        if isinstance(b, Binding) and b.action in WmtuiApp.LIVE_ONLY
    ]


def _app_bindings_except(key: str) -> list[BindingType]:
    """Textual's own app bindings (ctrl+c ...), less one this app declares itself."""
    return [b for b in App.BINDINGS if not (isinstance(b, Binding) and b.key == key)]


class ReplayApp(WmtuiApp, inherit_bindings=False):
    """Plays a recorded run; stays on the final screen when the recording ends."""

    TITLE = "wmtui replay"
    # Not inherited (inherit_bindings=False): replay's own keys, then the live app's steering
    # keys as its LIVE_ONLY table marks them.
    BINDINGS: ClassVar[list[BindingType]] = [
        *_app_bindings_except("ctrl+q"),
        Binding("space", "toggle_pause", "pause"),
        Binding("1", "speed(1)", "×1"),
        Binding("4", "speed(4)", "×4"),
        Binding("6", "speed(16)", "×16"),
        Binding("left,left_square_bracket", "seek(-10)", "−10s", key_display="←", priority=True),
        Binding("right,right_square_bracket", "seek(10)", "+10s", key_display="→", priority=True),
        Binding("ctrl+q", "quit", "quit", priority=True),
        Binding("ctrl+s", "screenshot_svg", "screenshot", show=False),
        Binding("question_mark", "help", "help", show=False),
        *live_only_bindings(),
    ]

    def __init__(self, session_factory: Callable[[], ReplaySession], refresh: float = 4.0) -> None:
        # No run_path: attacks and scans are refused, screenshots go to the working directory
        # rather than into the recording.
        super().__init__(session_factory, refresh=refresh, run_path=None)
        self._base_title = "wmtui"
        self._shown_title = ""

    def on_mount(self) -> None:
        """The log gives up focus, so the arrow keys seek instead of scrolling it sideways."""
        log = self.query_one("#log", Log)
        log.can_focus = False
        if self.focused is log:
            self.set_focus(None)

    @property
    def replay(self) -> ReplaySession | None:
        return self.session if isinstance(self.session, ReplaySession) else None

    def _follow_phases(self) -> None:
        """Recorded phases name run folders of the machine that recorded them: a replay
        follows none (its screenshots stay in the working directory, never in those)."""

    # -- event pump -----------------------------------------------------------------------
    def pump(self) -> None:
        """Rebuild after a backward seek, drain as usual, then tick the replay clock."""
        replay = self.replay
        if replay is not None and replay.take_reset():
            self._rebuild()
        super().pump()
        self._paint_clock()

    def _rebuild(self) -> None:
        """Forget what was shown; the next poll re-sends the recording up to the position."""
        self.state = DashboardState()
        self._painted = -1
        self.dashboard.reset()

    def repaint(self) -> None:
        super().repaint()
        self._base_title = self.dashboard.texts.get("#title", "")
        self._shown_title = str(self.query_one("#title", Static).content)

    def _paint_clock(self) -> None:
        replay = self.replay
        if replay is None:
            return
        title = f"{replay.status_line()} · {self._base_title}"
        if title != self._shown_title:
            try:
                widget = self.query_one("#title", Static)
            except NoMatches:  # the timer's last tick while the app tears its screen down
                return
            self._shown_title = title
            widget.update(title)

    # -- replay controls ------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        """The replay clock decides, not the recorded status (the run may have been paused)."""
        replay = self.replay
        if replay is not None and replay.paused:
            self._send(cmd.Resume(), "resume")
        else:
            self._send(cmd.Pause(), "pause")

    def action_speed(self, speed: float) -> None:
        self._send(SetSpeed(float(speed)), f"speed ×{speed:g}")

    def action_seek(self, seconds: float) -> None:
        self._send(Seek(float(seconds)), f"seek {seconds:+g} s")

    def _ended(self) -> bool:
        """The replay's clock answers after the recording's end (← rewinds): the live app's
        "keys do nothing now" is not the replay's."""
        return False

    # -- live-only controls, refused ------------------------------------------------------
    def _refuse(self, what: str) -> None:
        self.query_one("#log", Log).write_line(f"! not available in replay: {what}")

    async def run_action(self, action: Any, default_namespace: Any = None) -> bool:
        """A live-only key answers with one log line instead of steering (no worker here)."""
        name = action if isinstance(action, str) else ""
        if name in self.LIVE_ONLY:
            self._refuse(self.LIVE_ONLY[name])
            return True
        return await super().run_action(action, default_namespace)

    def action_help(self) -> None:
        self.push_screen(ReplayHelpScreen())

    async def action_quit(self) -> None:
        """Nothing runs in the background: leave at once."""
        replay = self.replay
        if replay is not None:
            replay.stop()
            where = f"t={replay.position:.1f}/{replay.duration:.1f} s"
            self.exit_message = f"wmtui: replay of {replay.run} quit at {where}"
        self.exit()
