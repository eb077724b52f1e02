"""``wmtui attach RUN``: the dashboard of a run going on elsewhere, live, watch only.

The replay app's screen and keys, driven by a :class:`~wmtui.tui.follow.FollowSession`
instead of a recording: the keys that would steer a worker answer with one log line, and
quitting leaves the run going.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.binding import Binding, BindingType
from textual.widgets import Log

from wmtui.tui.follow import FollowSession
from wmtui.tui.replay_app import ReplayApp, _app_bindings_except, live_only_bindings


class AttachApp(ReplayApp, inherit_bindings=False):
    """A live, read-only view of a run folder's event stream."""

    TITLE = "wmtui attach"
    # no replay clock to pause, speed up or seek: quit, and the live app's steering keys,
    # which answer that the view only watches
    BINDINGS: ClassVar[list[BindingType]] = [
        *_app_bindings_except("ctrl+q"),
        Binding("ctrl+q", "quit", "detach", priority=True),
        Binding("ctrl+s", "screenshot_svg", "screenshot", show=False),
        *live_only_bindings(),
    ]

    def __init__(self, session_factory: Callable[[], FollowSession], refresh: float = 2.0):
        super().__init__(session_factory, refresh=refresh)  # type: ignore[arg-type]

    def _refuse(self, what: str) -> None:
        self.query_one("#log", Log).write_line(f"! {what}: an attached view only watches")

    async def action_quit(self) -> None:
        """Stop watching; the run goes on where it runs."""
        session: Any = self.session
        if isinstance(session, FollowSession):
            session.stop()
            going = "has ended" if session.ended else "goes on"
            self.exit_message = f"wmtui: detached from {session.run} (the run {going})"
        self.exit()
