"""The start screen: pick a scenario, read what it shows, edit any phase, start it.

Editing uses the same generated form as the attack/scan picker, so a phase's fields are its
plugin's ``param(...)`` declaration and an invalid value is refused in place.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from rich.console import Console
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from engine.config import TrainConfig
from engine.data import DATASETS
from engine.errors import UserError
from engine.registry import as_typed
from engine.studies.scenarios import PhaseSpec, Scenario, load_scenario, preset_names
from wmtui.tui.screens.plugin_form import Choice, PluginFormScreen
from wmtui.tui.screens.prompt import PromptScreen, Validator, int_in_range

#: what `?` lists on this screen (the dashboard's keys do nothing here)
HELP_KEYS = [
    ("↑ / ↓", "choose a scenario, or a phase"),
    ("tab", "switch between the scenarios and the chosen one's phases"),
    ("enter", "start the scenario (on a phase: edit it)"),
    ("e", "edit the highlighted phase's parameters"),
    ("d", "the dataset every phase trains and tests on"),
    ("p", "the training epochs"),
    ("ctrl+t", "light / dark theme"),
    ("q", "quit"),
    ("?", "this help; escape closes it"),
]


def phase_line(index: int, spec: PhaseSpec) -> str:
    shown = user_terms({**spec.params, **spec.budget})
    on = f" on {spec.on}" if spec.on else ""
    return f"{index}. {spec.title or spec.label()}{on}" + (f"  ({shown})" if shown else "")


def user_terms(values: dict[str, object]) -> str:
    """``remove, data fraction 10%`` for ``{remove: True, data_fraction: 0.1}``: the words a
    person would use, not a Python dict."""
    parts = []
    for key, value in values.items():
        name = key.replace("_", " ")
        if isinstance(value, bool):
            parts.append(name if value else f"no {name}")
        elif isinstance(value, float) and key.endswith(("fraction", "ratio")) and value <= 1:
            parts.append(f"{name} {100 * value:g}%")
        else:
            parts.append(f"{name} {as_typed(value)}")
    return ", ".join(parts)


def training_line(config: TrainConfig) -> str:
    """What every phase trains on: what --dataset and --epochs change (d and p here, as the
    footer says)."""
    epochs = f"{config.epochs} epoch" + ("s" if config.epochs != 1 else "")
    return f"dataset {config.dataset} · {epochs} · model {config.model}"


class StartScreen(Screen[Scenario | None]):
    """Dismisses with the chosen (possibly edited) scenario, or None to quit."""

    DEFAULT_CSS = """
    StartScreen { layout: vertical; }
    StartScreen #start-title {
        height: 1; background: $primary; text-style: bold; padding: 0 1;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    StartScreen #start-body { height: 1fr; }
    StartScreen #scenarios { width: 24; height: 1fr; border: round $primary-darken-2; }
    StartScreen #start-right { width: 1fr; height: 1fr; }
    StartScreen #about { height: auto; max-height: 50%; padding: 0 1; }
    StartScreen #training {
        height: 1; padding: 0 1; color: $accent; text-wrap: nowrap; text-overflow: ellipsis;
    }
    StartScreen #phases { height: 1fr; border: round $primary-darken-2; }
    StartScreen #start-message { height: auto; color: $warning; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "start", "start", priority=True),
        Binding("e", "edit", "edit phase"),
        Binding("d", "dataset", "dataset"),
        Binding("p", "epochs", "epochs"),
        Binding("tab", "app.focus_next", "switch list", show=False),
        Binding("q,escape", "quit", "quit"),
    ]

    HELP_KEYS = HELP_KEYS

    def __init__(
        self,
        names: list[str] | None = None,
        message: str = "",
        overrides: dict[str, object] | None = None,
    ) -> None:
        super().__init__()
        self.message = message
        #: training values over every scenario's [train] (command-line flags, d and p): the
        #: caller's dict, changed in place, so a scenario refused and chosen again keeps them
        self.overrides = overrides if overrides is not None else {}
        self.scenarios: dict[str, Scenario] = {}
        for name in names or preset_names():
            try:
                self.scenarios[name] = load_scenario(name)
            except UserError as exc:  # a broken user file is shown, not fatal
                self.notify(f"{name}: {exc}", severity="error")
        self.chosen = next(iter(self.scenarios), "")
        self._about = Text()  # the chosen scenario's whole title and description

    def compose(self) -> ComposeResult:
        yield Static(
            "wmtui · choose a scenario (enter starts, e edits a phase, ? keys)", id="start-title"
        )
        with Horizontal(id="start-body"):
            yield OptionList(*[Option(n, id=n) for n in self.scenarios], id="scenarios")
            with Vertical(id="start-right"):
                yield Static("", id="about")
                yield Static("", id="training")
                yield OptionList(id="phases")
        yield Static("", id="start-message")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        self.query_one("#scenarios", OptionList).border_title = "scenarios"
        self.query_one("#phases", OptionList).border_title = "phases (e: edit)"
        self.query_one("#scenarios", OptionList).focus()
        self.query_one("#start-message", Static).update(self.message)
        self.show(self.chosen)

    def show(self, name: str) -> None:
        if name not in self.scenarios:
            return
        self.chosen = name
        scenario = self.scenarios[name]
        prose = " ".join(scenario.description.split())  # TOML line breaks are not paragraphs
        self._about = Text(scenario.title + "\n", style="bold") + Text(prose)
        self._fit_about()
        self._show_training()
        phases = self.query_one("#phases", OptionList)
        highlighted = phases.highlighted
        phases.clear_options()
        phases.add_options(
            [Option(Text(phase_line(i, p)), id=p.name) for i, p in enumerate(scenario.phases, 1)]
        )
        if highlighted is not None and highlighted < len(scenario.phases):
            phases.highlighted = highlighted

    def _show_training(self) -> None:
        scenario = self.scenarios.get(self.chosen)
        if scenario is None:
            return
        try:
            line = training_line(scenario.config(self.overrides))
        except UserError as exc:  # a scenario file with a bad [train] value
            line = f"[train]: {exc}"
        self.query_one("#training", Static).update(Text(line))

    def action_dataset(self) -> None:
        names = ["auto", *DATASETS.names()]

        def check(text: str) -> str | None:
            return None if text in names else f"choose one of: {', '.join(names)}"

        self._ask("Dataset for every phase:", check, ", ".join(names[:4]) + " …", "dataset")

    def action_epochs(self) -> None:
        self._ask("Training epochs:", int_in_range(1, 1000), "e.g. 3", "epochs")

    def _ask(self, question: str, check: Validator, hint: str, key: str) -> None:
        def apply(text: str | None) -> None:
            if text is not None:
                self.overrides[key] = text
                self.query_one("#start-message", Static).update(f"{key}: {text}")
                self._show_training()

        self.app.push_screen(PromptScreen(question, check, hint), apply)

    def on_resize(self) -> None:
        self.call_after_refresh(self._fit_about)

    def _fit_about(self) -> None:
        """The description in the rows it has (half the column), ending with "…" where it
        is cut: at 80x24 a long one was cut mid-sentence with no sign of more."""
        about = self.query_one("#about", Static)
        width = about.content_region.width
        rows = self.query_one("#start-right").content_region.height // 2
        text = fit_text(self._about, width, rows) if width > 1 and rows > 0 else self._about
        about.update(text)

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if event.option_list.id == "scenarios" and event.option.id:
            self.show(event.option.id)

    def action_start(self) -> None:
        if self.focused is not None and self.focused.id == "phases":
            self.action_edit()
            return
        if self.chosen:
            scenario = self.scenarios[self.chosen]
            scenario.train = {**scenario.train, **self.overrides}
            self.dismiss(scenario)

    def action_edit(self) -> None:
        """Edit the highlighted phase (the first if none) with its plugin's form."""
        scenario = self.scenarios.get(self.chosen)
        if scenario is None:
            return
        index = self.query_one("#phases", OptionList).highlighted or 0
        spec = scenario.phases[index]
        form = phase_form(spec)
        if form is None:
            self.query_one("#start-message", Static).update(
                f"{spec.name}: a train phase has no plugin parameters (edit [train] in the file)"
            )
            return

        def apply(choice: Choice | None) -> None:
            if choice is None:
                return
            apply_choice(spec, choice)
            self.query_one("#start-message", Static).update(f"{spec.name}: parameters updated")
            self.show(self.chosen)

        self.app.push_screen(form, apply)

    def action_quit(self) -> None:
        self.dismiss(None)


def fit_text(text: Text, width: int, rows: int) -> Text:
    """``text`` wrapped to ``width``; past ``rows`` lines, cut and ended with "…"."""
    lines = text.wrap(Console(width=width), width)
    if len(lines) <= rows:
        return text
    kept = list(lines)[:rows]
    last = kept[-1]
    last.rstrip()
    if last.cell_len >= width:
        last.truncate(width - 1)
    last.append("…")
    return Text("\n").join(kept)


def phase_form(spec: PhaseSpec) -> PluginFormScreen | None:
    """The generated form for one phase, pre-filled with its current values."""
    if not spec.plugin:
        return None
    return PluginFormScreen(
        f"Phase {spec.name}: {spec.kind} {spec.plugin}",
        [spec.job_kind.plugin(spec.plugin)],
        initial=spec.params,
        initial_budget=spec.budget,
        with_budget=spec.kind != "embed",
        validate=lambda name, params, budget: _validated(spec, params, budget),
    )


def _validated(spec: PhaseSpec, params: object, budget: object) -> None:
    values = dataclasses.asdict(params) if dataclasses.is_dataclass(params) else {}
    candidate = dataclasses.replace(spec, params=values)
    candidate.parsed_params()


def apply_choice(spec: PhaseSpec, choice: Choice) -> None:
    """Keep only the values that differ from the declaration's defaults: the phase stays
    readable and a later change of a default still reaches it."""
    _, params, budget = choice
    spec.params = changed_values(params)
    if spec.kind != "embed":
        spec.budget = changed_values(budget)


def changed_values(values: object) -> dict[str, object]:
    if not dataclasses.is_dataclass(values) or isinstance(values, type):
        return {}
    defaults = type(values)()
    return {
        f.name: getattr(values, f.name)
        for f in dataclasses.fields(values)
        if getattr(values, f.name) != getattr(defaults, f.name)
    }
