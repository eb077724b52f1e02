"""Follow a run's ``events.jsonl`` as it grows: the dashboard of a run going on elsewhere.

A run writes every event to ``RUN/events.jsonl``, one whole line at a time, flushed
(:class:`engine.runs.EventLog`). :class:`FollowSession` speaks the app's session protocol
(start/poll/send/stop) over that file: each poll reads what was appended since the last
one, so ``wmtui attach RUN`` shows a headless run, or one in another terminal, live, and
from a new SSH login after the old one dropped. It only watches: nothing goes back to the
run, and quitting leaves the run going.

No Textual here: the session is tested without a UI by appending to a file.
"""

from __future__ import annotations

from pathlib import Path

from engine import commands as cmd
from engine.events import Done, Event, Log
from wmtui.tui.replay import events_file, parse_line

#: at most this much of the file is read per poll, so a long recording fills in over a few
#: repaints instead of freezing the first one
CHUNK = 4 << 20


class FollowSession:
    """The events of ``run`` as they are appended; :attr:`ended` once its Done is read."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.path = events_file(run)  # a RunError (one line, exit 2) when there is none
        self.ended = False
        self.stopped = False
        self._offset = 0
        self._partial = b""
        self._notes: list[Event] = []

    def start(self) -> FollowSession:
        self._notes.append(Log(f"attached to {self.run}: watching, not steering"))
        return self

    def poll(self) -> list[Event]:
        """Whole lines appended since the last poll, as events; a torn line waits for the
        rest of it, and a corrupt one is one warning, never the end of the view."""
        if self.stopped:
            return []
        out, self._notes = self._notes, []
        for line in self._new_lines():
            try:
                event = parse_line(line.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as exc:
                out.append(Log(f"skipped a corrupt line of {self.path.name}: {exc}", "warning"))
                continue
            out.append(event)
            if isinstance(event, Done) and not self.ended:
                self.ended = True
                out.append(Log("the run has ended: ctrl+q quits"))
        return out

    def _new_lines(self) -> list[bytes]:
        try:
            size = self.path.stat().st_size
            if size < self._offset:  # the run was started again over its folder
                self._offset, self._partial = 0, b""
                self._notes.append(Log("the recording was started again", "warning"))
            with self.path.open("rb") as handle:
                handle.seek(self._offset)
                chunk = handle.read(CHUNK)
        except OSError:
            return []  # moved or not readable for a moment: the next poll tries again
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        return [line for line in lines if line.strip()]

    def send(self, command: cmd.Command) -> None:
        self._notes.append(
            Log(f"{command.what} ignored: an attached view only watches the run", "warning")
        )

    def stop(self, timeout: float = 2.0) -> bool:
        """Stop watching; the run itself goes on."""
        self.stopped = True
        return True
