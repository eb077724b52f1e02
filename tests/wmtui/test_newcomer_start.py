"""The start screen as a newcomer meets it: the training flags given on the command line are
shown and applied (and can be changed there), `?` lists the start screen's own keys, and a
phase's parameters read in user terms."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from engine.studies.scenarios import Scenario, load_scenario
from tests.wmtui.fakes import FakeSession
from wmtui.cli import app as cli_app
from wmtui.tui.app import WmtuiApp
from wmtui.tui.screens.start import phase_line

runner = CliRunner()


class FakeApp:
    """Stands in for WmtuiApp: records what the command would open."""

    made: ClassVar[list[FakeApp]] = []

    def __init__(self, factory: Any, refresh: float = 2.0, run_path: Path | None = None, **kw):
        self.factory, self.kw = factory, kw
        self.exit_message = ""
        FakeApp.made.append(self)

    def run(self) -> None:
        pass


def test_training_flags_alone_open_the_start_screen_with_them(monkeypatch) -> None:
    import wmtui.tui.app

    FakeApp.made = []
    monkeypatch.setattr(wmtui.tui.app, "WmtuiApp", FakeApp)
    result = runner.invoke(cli_app, ["--dataset", "synthetic", "--epochs", "1"])
    assert result.exit_code == 0, result.output
    (shown,) = FakeApp.made
    assert shown.factory is None and shown.kw.get("chooser") is not None  # the start screen
    assert shown.kw.get("overrides") == {"dataset": "synthetic", "epochs": "1"}


def test_tui_written_out_still_runs_one_embedding_phase(monkeypatch, tmp_path) -> None:
    import wmtui.tui.app

    FakeApp.made = []
    monkeypatch.setattr(wmtui.tui.app, "WmtuiApp", FakeApp)
    args = ["tui", "--dataset", "synthetic", "--epochs", "1", "--out", str(tmp_path / "r")]
    result = runner.invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    (shown,) = FakeApp.made
    assert shown.factory is not None and shown.kw.get("chooser") is None


def test_bad_training_flags_are_refused_before_the_start_screen(monkeypatch) -> None:
    import wmtui.tui.app

    FakeApp.made = []
    monkeypatch.setattr(wmtui.tui.app, "WmtuiApp", FakeApp)
    result = runner.invoke(cli_app, ["--dataset", "synthetic", "--epochs", "0"])
    assert result.exit_code == 2 and "epochs" in result.output and not FakeApp.made


def screen_text(app: WmtuiApp, selector: str) -> str:
    return str(app.screen.query_one(selector).render())


async def test_the_start_screen_shows_the_dataset_and_epochs_and_changes_them() -> None:
    chosen: list[Scenario] = []

    def chooser(scenario: Scenario) -> tuple[FakeSession, Path]:
        chosen.append(scenario)
        return FakeSession(), Path("r")

    overrides = {"dataset": "synthetic", "epochs": "1"}
    app = WmtuiApp(None, refresh=4.0, chooser=chooser, overrides=overrides)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        shown = screen_text(app, "#training")
        assert "synthetic" in shown and "1 epoch" in shown
        await pilot.press("p")  # the epochs prompt
        await pilot.pause()
        await pilot.press("4", "enter")
        await pilot.pause()
        assert "4 epochs" in screen_text(app, "#training")
        await pilot.press("enter")
        await pilot.pause()
    config = chosen[0].config()
    assert config.dataset == "synthetic" and config.epochs == 4


async def test_without_flags_the_start_screen_shows_each_scenario_s_own() -> None:
    app = WmtuiApp(None, refresh=4.0, chooser=lambda s: (FakeSession(), Path("r")))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        classic = load_scenario("classic").config()
        shown = screen_text(app, "#training")
        assert classic.dataset in shown and f"{classic.epochs} epochs" in shown


async def test_help_on_the_start_screen_lists_its_own_keys() -> None:
    app = WmtuiApp(None, refresh=4.0, chooser=lambda s: (FakeSession(), Path("r")))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("question_mark")
        await pilot.pause()
        text = str(app.screen.query_one("#help-text").render())
    assert "edit the highlighted phase" in text and "epochs" in text
    assert "pause" not in text and "learning rate" not in text


@pytest.mark.parametrize(
    ("name", "phase", "wanted"),
    [("classic", 1, "remove, data fraction 10%"), ("classic", 0, "target label 7")],
)
def test_phases_read_in_user_terms(name: str, phase: int, wanted: str) -> None:
    scenario = load_scenario(name)
    line = phase_line(phase + 1, scenario.phases[phase])
    assert wanted in line and "=" not in line and "True" not in line
