"""The key-binding help (`?`): the same bindings the footer shows, with what each does."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = [
    ("space", "pause / resume the running phase"),
    ("+ / -", "learning rate x2 / ÷2, applied between steps"),
    ("r", "set an exact learning rate"),
    ("t", "switch the trigger being embedded (text, square, noise)"),
    ("l", "switch the target label being embedded"),
    ("a", "attack the current model (its latest state), from a form"),
    ("d", "scan the current model (its latest state) for a watermark"),
    ("s", "stop (the phase's checkpoint is kept; a scenario ends)"),
    ("n", "skip to the scenario's next phase (this one's model is kept)"),
    ("e", "edit the next phase's parameters before it starts"),
    ("c", "checkpoint now"),
    ("f", "repaint rate: 1, 2, 4 or 10 per second"),
    ("ctrl+t", "light / dark theme"),
    ("ctrl+s", "save an SVG screenshot into the run directory"),
    ("ctrl+q", "quit (the worker stops within 2 s)"),
    ("?", "this help; escape closes it"),
]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 76; max-width: 100%; height: auto; max-height: 100%; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q", "dismiss", "close"),
    ]

    def __init__(self, keys: list[tuple[str, str]] | None = None) -> None:
        super().__init__()
        self.keys = keys or KEYS  # the start screen passes its own

    def compose(self) -> ComposeResult:
        lines = "\n".join(f"{key:>8}  {text}" for key, text in self.keys)
        with Vertical():
            yield Static("wmtui keys\n\n" + lines, id="help-text")
