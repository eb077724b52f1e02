"""The Textual playground: a live view of a session, steered from the keyboard.

The worker thread never touches widgets: a timer (2-4 Hz by default) drains the session's
event queue, folds it into :class:`DashboardState` and repaints only what changed. Keys turn
into commands; the worker acknowledges each one in the log.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Protocol

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.timer import Timer
from textual.widgets import Footer, Log

from engine import commands as cmd
from engine.errors import UserError
from engine.events import Event
from engine.jobs import JOB_KINDS, JobSpec
from engine.studies.scenarios import Scenario
from engine.watermarks.base import NEXT_TRIGGER
from wmtui.tui.dashboard import Dashboard
from wmtui.tui.screens.plugin_form import Choice, PluginFormScreen
from wmtui.tui.screens.prompt import PromptScreen, int_in_range, positive_float
from wmtui.tui.state import DashboardState
from wmtui.tui.stop_signals import quit_on_stop_signal

REPAINT_RATES = (1.0, 2.0, 4.0, 10.0)
THEMES = ("textual-dark", "textual-light")
#: session states after which the worker has ended
FINISHED = frozenset({"completed", "stopped", "failed", "diverged"})


class SessionLike(Protocol):
    """What the app needs of a session; tests pass a scripted fake."""

    def start(self) -> object: ...
    def poll(self) -> list[Event]: ...
    def send(self, command: cmd.Command) -> None: ...
    def stop(self, timeout: float = 2.0) -> bool: ...


#: starts a chosen scenario: (session, run folder)
Chooser = Callable[[Scenario], tuple["SessionLike", Path]]


class WmtuiApp(App[None]):
    """Live training dashboard (loss, accuracy, status, log)."""

    #: read through importlib.resources: the stylesheet ships inside the installed package
    CSS = resources.files("wmtui.tui").joinpath("app.tcss").read_text(encoding="utf-8")
    TITLE = "wmtui"
    #: the keys that steer a live worker, and what each steers: replay keeps them bound
    #: (pressing one explains itself) but out of its footer
    LIVE_ONLY: ClassVar[dict[str, str]] = {
        "lr_up": "learning rate",
        "lr_down": "learning rate",
        "set_lr": "learning rate",
        "next_trigger": "trigger",
        "set_label": "target label",
        "attack": "attack",
        "detect": "scan",
        "stop": "stop (ctrl+q quits)",
        "skip_phase": "next phase",
        "edit_next": "editing a phase",
        "checkpoint": "checkpoint",
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "toggle_pause", "pause"),
        Binding("plus,equals_sign", "lr_up", "lr×2", key_display="+"),
        Binding("minus", "lr_down", "lr÷2", key_display="-"),
        Binding("r", "set_lr", "lr=", show=False),
        Binding("t", "next_trigger", "trig"),
        Binding("l", "set_label", "label", show=False),
        Binding("a", "attack", "attack"),
        Binding("d", "detect", "scan"),
        Binding("s", "stop", "stop"),
        Binding("n", "skip_phase", "next"),
        Binding("e", "edit_next", "edit", show=False),
        Binding("c", "checkpoint", "ckpt", show=False),
        Binding("f", "repaint_rate", "fps", show=False),
        Binding("ctrl+t", "toggle_theme", "theme", show=False),
        Binding("ctrl+q", "quit", "quit", priority=True),
        Binding("ctrl+s", "screenshot_svg", "screenshot", show=False),
        # at 80 columns the footer holds the keys above and this one, which lists them all
        Binding("question_mark", "help", "keys"),
    ]

    def __init__(
        self,
        session_factory: Callable[[], SessionLike] | None,
        refresh: float = 2.0,
        run_path: Path | None = None,
        *,
        chooser: Chooser | None = None,
        scenario: Scenario | None = None,
        overrides: dict[str, object] | None = None,
    ) -> None:
        super().__init__()
        #: training values the start screen shows and applies (its d and p keys change them)
        self.overrides: dict[str, object] = dict(overrides or {})
        self.run_path = run_path  # the run whose saved model the next attack or scan reads
        self._session_factory = session_factory
        #: with no session yet, the start screen picks a scenario and this starts it
        self._chooser = chooser
        self.scenario = scenario
        self._timer: Timer | None = None
        self._results_seen = 0
        self.session: SessionLike | None = None
        self.state = DashboardState()
        self.refresh_hz = refresh
        self._painted = -1
        self._early: Timer | None = None
        self._early_until = 0.0
        self.exit_message = ""
        self._said_ended = False  # "keys do nothing now" is said once per session

    def compose(self) -> ComposeResult:
        yield Dashboard(id="dashboard")
        yield Footer(show_command_palette=False, compact=True)

    def on_mount(self) -> None:
        self.fit_layout()
        # The worker trains in a thread of this process: hand the GIL back to it within 1 ms
        # (Python's default is 5 ms) whenever it returns from a torch kernel.
        sys.setswitchinterval(0.001)
        self._timer = self.set_interval(1.0 / self.refresh_hz, self.pump)
        quit_on_stop_signal(self, self.action_quit)  # SIGTERM/SIGHUP: as ctrl+q
        if self._session_factory is not None:
            self._begin(self._session_factory())
        elif self._chooser is not None:
            from wmtui.tui.screens.start import StartScreen

            self.push_screen(StartScreen(overrides=self.overrides), self._chosen)

    #: what works before a session exists (on the start screen)
    SESSIONLESS_ACTIONS: ClassVar[frozenset[str]] = frozenset(
        {"quit", "help", "toggle_theme", "screenshot_svg", "repaint_rate"}
    )

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Session keys are hidden and inert until a scenario has started."""
        return self.session is not None or action in self.SESSIONLESS_ACTIONS

    def _begin(self, session: SessionLike) -> None:
        self.session = session
        session.start()
        self.refresh_bindings()
        # Until the first reading is on screen, look 20 times a second: that is when the user
        # waits. A poll that finds nothing repaints nothing; then the regular timer takes over.
        self._early_until = time.monotonic() + 30.0
        self._early = self.set_interval(0.05, self._pump_until_first_point)

    def _pump_until_first_point(self) -> None:
        self.pump()
        state = self.state
        done = state.loss_series.x or state.scan_sizes or time.monotonic() > self._early_until
        if done and self._early is not None:
            self._early.stop()

    def _chosen(self, scenario: Scenario | None) -> None:
        """The start screen's answer: start that scenario, or leave."""
        if scenario is None or self._chooser is None:
            self.exit()
            return
        try:
            session, path = self._chooser(scenario)
        except UserError as exc:  # e.g. a dataset that is not there: say so, choose again
            from wmtui.tui.screens.start import StartScreen

            self.query_one("#log", Log).write_line(f"! {scenario.name} refused: {exc}")
            refused = f"{scenario.name} refused: {exc}"
            self.push_screen(StartScreen(message=refused, overrides=self.overrides), self._chosen)
            return
        self.scenario, self.run_path = scenario, path
        self._begin(session)

    # -- event pump -----------------------------------------------------------------------
    def pump(self) -> None:
        """Drain new events and repaint; called by the timer, never per training step."""
        self.fit_layout()
        if self.session is None:
            return
        for event in self.session.poll():
            self.state.apply(event)
        self._follow_phases()
        if self.state.version != self._painted:
            try:
                self.repaint()
            except NoMatches:  # the app is closing: its widgets are already gone
                return
            self._painted = self.state.version

    def _follow_phases(self) -> None:
        """After a scenario phase that saved a model, `a` and `d` work on that model."""
        results = self.state.phase_results
        for result in results[self._results_seen :]:
            run = result.get("run")
            if isinstance(run, str) and (Path(run) / "model.safetensors").is_file():
                self.run_path = Path(run)
        self._results_seen = len(results)

    def repaint(self) -> None:
        self.dashboard.paint(self.state)

    def fit_layout(self) -> None:
        """Small terminals (80x24) get the compact dashboard (:meth:`Dashboard.fit`).

        Checked on every repaint tick: the app is not sent a Resize event of its own."""
        self.dashboard.fit(self.size.height)

    @property
    def dashboard(self) -> Dashboard:
        """The dashboard, found on the first screen even while a form or prompt is on top."""
        screen = self.screen_stack[0] if self.screen_stack else self.screen
        return screen.query_one(Dashboard)

    # -- controls -------------------------------------------------------------------------
    def _ended(self) -> bool:
        """Whether the session's worker has ended; the first key that finds it so says that
        keys do nothing now (an echoed "> skip to the next phase" read as if it applied)."""
        if self.session is None or self.worker_alive:
            return False
        if not self._said_ended:
            self._said_ended = True
            self.query_one("#log", Log).write_line(
                f"! the session has ended ({self.state.status}): steering keys do nothing "
                "now; a/d work on the saved model"
            )
        return True

    def _send(self, command: cmd.Command, note: str) -> None:
        if self._ended():
            return
        if self.session is not None:
            self.session.send(command)
            if note:
                self.query_one("#log", Log).write_line(f"> {note}")

    def action_toggle_pause(self) -> None:
        if self.state.status == "paused":
            self._send(cmd.Resume(), "resume")
        else:
            self._send(cmd.Pause(), "pause")

    def action_lr_up(self) -> None:
        self._send(cmd.ScaleLR(2.0), "learning rate ×2")

    def action_lr_down(self) -> None:
        self._send(cmd.ScaleLR(0.5), "learning rate ÷2")

    def action_set_lr(self) -> None:
        if self._ended():
            return

        def send(text: str | None) -> None:
            if text is not None:
                self._send(cmd.SetLR(float(text)), f"learning rate = {text}")

        self.push_screen(PromptScreen("Learning rate:", positive_float(100.0), "e.g. 0.01"), send)

    def action_next_trigger(self) -> None:
        """The worker picks the trigger after the key's own (and says which, or why not)."""
        self._send(cmd.SetTrigger(NEXT_TRIGGER), "next trigger")

    def action_set_label(self) -> None:
        if self._ended():
            return
        classes = self.state.info.get("classes")
        high = int(classes) - 1 if isinstance(classes, int) else None

        def send(text: str | None) -> None:
            if text is not None:
                self._send(cmd.SetTargetLabel(int(text)), f"target label -> {text}")

        self.push_screen(PromptScreen("Target label:", int_in_range(0, high), "class index"), send)

    #: the plugin each follow-up form opens on: the ones that work best here
    FIRST_CHOICE: ClassVar[dict[str, str]] = {"attack": "ft-basic", "detect": "neural-cleanse"}

    def action_attack(self) -> None:
        self._pick("attack", "Attack the current model")

    def action_detect(self) -> None:
        self._pick("detect", "Scan the current model for a watermark")

    def _pick(self, kind: str, title: str) -> None:
        """The form of every plugin of job ``kind``, checked as the job's spec is checked."""
        if not self.worker_alive and self.saved_model() is None:
            self.query_one("#log", Log).write_line("! no model to work on in this session")
            return
        first = self.FIRST_CHOICE.get(kind, "")
        plugins = sorted(JOB_KINDS.get(kind).factory.plugins(), key=lambda p: p.name != first)

        def check(name: str, params: Any, budget: Any) -> None:
            JobSpec(kind, name, params, budget=budget).validate(inputs=False)

        form = PluginFormScreen(title, plugins, validate=check)
        self.push_screen(form, lambda choice: self.start_followup(kind, choice))

    @property
    def worker_alive(self) -> bool:
        return self.session is not None and self.state.status not in FINISHED

    def saved_model(self) -> Path | None:
        """The model the last phase saved (after the session ended, `a`/`d` work on it)."""
        path = self.run_path
        return path if path is not None and (path / "model.safetensors").is_file() else None

    def start_followup(self, kind: str, choice: Choice | None) -> None:
        """While the worker runs, it runs the chosen job on the model it holds now (its latest
        state) and then goes on with the phase; once it has ended, a new session runs the
        job on the model the last phase saved."""
        if choice is None:
            return
        name, params, budget = choice
        log = self.query_one("#log", Log)
        if self.worker_alive:
            budget_values = dataclasses.asdict(budget) if budget is not None else {}
            params_values = dataclasses.asdict(params) if params is not None else {}
            self._send(
                cmd.Followup(kind, name, params_values, budget_values),
                f"{name} on the current model (the phase goes on after it)",
            )
            return
        source = self.saved_model()
        if source is None:
            log.write_line("! no saved model to work on")
            return
        from wmtui.tui.sessions import followup_session

        try:
            session, path = followup_session(kind, source, name, params, budget)
        except UserError as exc:
            log.write_line(f"! {name} refused: {exc}")
            return
        log.write_line(f"> {name} on {source} -> {path}")
        self.session, self.run_path = session, path
        self.state.status = "starting"
        self._said_ended = False
        session.start()

    def action_help(self) -> None:
        from wmtui.tui.screens.help import HelpScreen

        self.push_screen(HelpScreen(getattr(self.screen, "HELP_KEYS", None)))

    def action_screenshot_svg(self) -> None:
        """An SVG of the screen, into the running phase's folder (a scenario's ``02-gan``, not
        the folder of the model `a`/`d` work on), else the run's, else the working directory."""
        running = Path(self.state.phase_run) if self.state.phase_run else None
        folder = running if running is not None and running.is_dir() else self.run_path
        folder = folder or Path.cwd()
        path = self.save_screenshot(path=str(folder))
        self.query_one("#log", Log).write_line(f"> screenshot saved: {path}")

    def action_stop(self) -> None:
        self._send(cmd.Stop(), "stop")

    def action_skip_phase(self) -> None:
        self._send(cmd.SkipPhase(), "skip to the next phase")

    def action_checkpoint(self) -> None:
        self._send(cmd.Checkpoint(), "checkpoint now")

    def action_repaint_rate(self) -> None:
        """Cycle 1/2/4/10 repaints per second (fewer keep SSH sessions light)."""
        rates = REPAINT_RATES
        nearest = min(range(len(rates)), key=lambda i: abs(rates[i] - self.refresh_hz))
        self.refresh_hz = rates[(nearest + 1) % len(rates)]
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(1.0 / self.refresh_hz, self.pump)
        self.query_one("#log", Log).write_line(f"> repaint {self.refresh_hz:g}/s")

    def action_toggle_theme(self) -> None:
        current = THEMES.index(self.theme) if self.theme in THEMES else -1
        self.theme = THEMES[(current + 1) % len(THEMES)]
        self.query_one("#log", Log).write_line(f"> theme {self.theme}")

    def action_edit_next(self) -> None:
        """Edit the next phase of the scenario before it starts (sent to the worker, which
        validates it again and refuses a phase that has begun)."""
        if self._ended():
            return
        log = self.query_one("#log", Log)
        scenario = self.scenario
        index = self.state.phase_index  # 1-based: the running phase
        if scenario is None or index >= len(scenario.phases):
            log.write_line("! no phase left to edit")
            return
        from wmtui.tui.screens.start import apply_choice, phase_form

        spec = scenario.phases[index]
        form = phase_form(spec)
        if form is None:
            log.write_line(f"! {spec.name}: a train phase has no plugin parameters")
            return

        def send(choice: Choice | None) -> None:
            if choice is None:
                return
            apply_choice(spec, choice)
            self._send(cmd.SetPhaseParams(spec.name, dict(spec.params)), f"edit {spec.name}")
            if spec.kind != "embed":
                self._send(cmd.SetPhaseParams(spec.name, dict(spec.budget), budget=True), "")

        self.push_screen(form, send)

    async def action_quit(self) -> None:
        """Stop the worker (at most ~1.5 s) and leave; the run directory stays valid."""
        if self.session is not None:
            self.session.stop(timeout=1.5)
        self.pump()
        status = self.state.status
        run = self.state.info.get("run")
        self.exit_message = f"wmtui: session {status}" + (f"; run saved in {run}" if run else "")
        self.exit()
