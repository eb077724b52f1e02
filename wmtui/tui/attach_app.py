"""``wmtui attach RUN``: the dashboard of a run going on elsewhere, live, watch only.

The replay app's screen and keys, driven by a :class:`~wmtui.tui.follow.FollowSession`
instead of a recording: the keys that would steer a worker answer with one log line, and
quitting leaves the run going.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.widgets import Log

from wmtui.tui.follow import FollowSession
from wmtui.tui.replay_app import ReplayApp


class AttachApp(ReplayApp):
    """A live, read-only view of a run folder's event stream."""

    TITLE = "wmtui attach"

    def __init__(self, session_factory: Callable[[], FollowSession], refresh: float = 2.0):
        super().__init__(session_factory, refresh=refresh)  # type: ignore[arg-type]

    def _refuse(self, what: str) -> None:
        self.query_one("#log", Log).write_line(f"! {what}: an attached view only watches")

    def action_toggle_pause(self) -> None:
        self._refuse("pause")

    def action_speed(self, speed: float) -> None:
        self._refuse("speed")

    def action_seek(self, seconds: float) -> None:
        self._refuse("seek")

    async def action_quit(self) -> None:
        """Stop watching; the run goes on where it runs."""
        session: Any = self.session
        if isinstance(session, FollowSession):
            session.stop()
            going = "has ended" if session.ended else "goes on"
            self.exit_message = f"wmtui: detached from {session.run} (the run {going})"
        self.exit()
