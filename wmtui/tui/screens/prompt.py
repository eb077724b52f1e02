"""A one-line prompt that validates in place: bad input is refused with a message, never sent."""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

Validator = Callable[[str], str | None]  # returns an error message, or None when valid


class PromptScreen(ModalScreen[str | None]):
    """Ask for one value; dismisses with the text, or None on escape."""

    DEFAULT_CSS = """
    PromptScreen { align: center middle; }
    PromptScreen > Vertical {
        width: 60; height: auto; padding: 1 2;
        border: thick $primary; background: $surface;
    }
    PromptScreen #prompt-error { color: $error; height: auto; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(self, question: str, validate: Validator, placeholder: str = "") -> None:
        super().__init__()
        self.question = question
        self.validate = validate
        self.placeholder = placeholder

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.question)
            yield Input(placeholder=self.placeholder, id="prompt-input")
            yield Label("", id="prompt-error")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        problem = self.validate(event.value.strip())
        if problem:
            self.query_one("#prompt-error", Label).update(problem)
            return
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


def int_in_range(low: int, high: int | None = None) -> Validator:
    def check(text: str) -> str | None:
        try:
            value = int(text)
        except ValueError:
            return f"not a whole number: {text!r}"
        if value < low or (high is not None and value > high):
            top = f"..{high}" if high is not None else " or more"
            return f"out of range: {value} (allowed: {low}{top})"
        return None

    return check


def positive_float(high: float) -> Validator:
    def check(text: str) -> str | None:
        try:
            value = float(text)
        except ValueError:
            return f"not a number: {text!r}"
        if not (0 < value <= high):  # also refuses NaN
            return f"out of range: {text} (allowed: 0 < value <= {high})"
        return None

    return check
