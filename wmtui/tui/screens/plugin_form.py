"""A form generated from a plugin's params declaration: pick a plugin, edit its parameters.

The same ``param(...)`` metadata that makes CLI flags makes these fields, and values are
validated by the same ``parse_params``: an invalid value is refused in place, never sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from engine.attacks import FAMILIES, AttackerBudget
from engine.errors import UserError
from engine.registry import Plugin, describe_params, parse_params

BUDGET_FIELDS = ("data_fraction", "epochs", "steps", "unlabeled", "queries", "answers")
Choice = tuple[str, Any, AttackerBudget]
#: raises UserError when (plugin name, params, budget) cannot run
Validator = Callable[[str, Any, AttackerBudget], None]


def by_family(plugins: list[Plugin[Any]]) -> list[Plugin[Any]]:
    """Attacks in the SoK's family order (preprocessing, modification, extraction,
    detection), the order ``wmtui attack --list`` shows; plugins without one keep theirs."""
    order = {family: i for i, family in enumerate(FAMILIES)}
    return sorted(plugins, key=lambda p: order.get(p.family, len(order)))


def option_label(plugin: Plugin[Any], width: int = 70) -> str:
    """One line per plugin, its family first: ``modification  prune: Magnitude or...``."""
    head = f"{plugin.family:<13} " if plugin.family else ""
    text = f"{head}{plugin.name}: {plugin.summary}"
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


class PluginFormScreen(ModalScreen[Choice | None]):
    """Choose an attack or detector and its parameters; dismisses with (name, params, budget)."""

    DEFAULT_CSS = """
    PluginFormScreen { align: center middle; }
    PluginFormScreen > Vertical {
        width: 76; max-width: 100%; height: 90%; padding: 0 1;
        border: thick $primary; background: $surface;
    }
    PluginFormScreen #form-fields { height: 1fr; }
    PluginFormScreen .field { height: 3; }
    PluginFormScreen .field Label { width: 18; padding: 1 1 0 0; }
    PluginFormScreen .field Input { width: 1fr; }
    PluginFormScreen #form-error { color: $error; height: auto; }
    PluginFormScreen #form-buttons { height: 3; align-horizontal: right; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "cancel")]

    def __init__(
        self,
        title: str,
        plugins: list[Plugin[Any]],
        *,
        initial: dict[str, Any] | None = None,
        initial_budget: dict[str, Any] | None = None,
        with_budget: bool = True,
        validate: Validator,
    ) -> None:
        super().__init__()
        self.title_text = title
        self.plugins = {p.name: p for p in plugins}
        self.chosen = plugins[0].name
        self.initial = {"params": initial or {}, "budget": initial_budget or {}}
        self.with_budget = with_budget
        self.validate = validate

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text)
            yield Select(
                [(option_label(p), p.name) for p in by_family(list(self.plugins.values()))],
                value=self.chosen,
                allow_blank=False,
                id="form-plugin",
            )
            yield VerticalScroll(id="form-fields")
            yield Label("", id="form-error")
            with Horizontal(id="form-buttons"):
                yield Button("Run", variant="primary", id="form-run")
                yield Button("Cancel", id="form-cancel")

    async def on_mount(self) -> None:
        self.query_one("#form-fields").can_focus = False  # tab goes field to field
        await self._build_fields()

    def rows(self) -> list[tuple[str, dict[str, Any]]]:
        """(group, row) for the plugin's params, then the attacker budget."""
        params = self.plugins[self.chosen].params
        own = [("params", row) for row in describe_params(params)] if params else []
        if not self.with_budget:
            return own
        budget = [
            ("budget", r) for r in describe_params(AttackerBudget) if r["name"] in BUDGET_FIELDS
        ]
        return own + budget

    async def _build_fields(self) -> None:
        fields = self.query_one("#form-fields", VerticalScroll)
        await fields.remove_children()
        rows = []
        for group, row in self.rows():
            value = self.initial[group].get(row["name"], row["default"])
            if self.chosen != next(iter(self.plugins)) and group == "params":
                value = row["default"]  # another plugin picked: its own defaults
            shown = "" if value is None else str(value)  # empty: the automatic value
            input_ = Input(value=shown, id=f"{group}-{row['name']}")
            input_.tooltip = row.get("help", "")
            rows.append(Horizontal(Label(row["name"].replace("_", "-")), input_, classes="field"))
        await fields.mount_all(rows)
        self.query_one("#form-error", Label).update("")
        self.query(Input).first().focus()

    async def on_select_changed(self, event: Select.Changed) -> None:
        if isinstance(event.value, str) and event.value != self.chosen:
            self.chosen = event.value
            await self._build_fields()

    def values(self, group: str) -> dict[str, str]:
        return {
            row["name"]: self.query_one(f"#{group}-{row['name']}", Input).value
            for g, row in self.rows()
            if g == group
        }

    def submit(self) -> None:
        plugin = self.plugins[self.chosen]
        try:
            params = parse_params(plugin.params, self.values("params")) if plugin.params else None
            given = self.values("budget")
            if given.get("queries", "").strip() in ("", "0"):  # the form's 0: no cap
                given.pop("queries", None)
            budget = AttackerBudget.from_mapping(given)
            self.validate(self.chosen, params, budget)
        except UserError as exc:
            self.query_one("#form-error", Label).update(str(exc))
            return
        self.dismiss((self.chosen, params, budget))

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "form-run":
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.submit()

    def action_cancel(self) -> None:
        self.dismiss(None)
