"""The command line as a user meets it: tui is the default command, listings and help fit 80
columns and say which flag belongs to which scheme, --threads is checked and applied."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from typer.testing import CliRunner

from engine.events import Log
from wmtui.cli import app
from wmtui.cli.main import default_to_tui

runner = CliRunner()
TINY = ["--dataset", "synthetic", "--train-size", "256", "--test-size", "64", "--epochs", "1"]


class FakeApp:
    """Stands in for WmtuiApp: records what the command would show, opens no screen."""

    made: ClassVar[list[FakeApp]] = []

    def __init__(self, factory: Any, refresh: float = 2.0, run_path: Path | None = None, **kw):
        self.factory, self.refresh, self.run_path = factory, refresh, run_path
        self.scenario, self.chooser = kw.get("scenario"), kw.get("chooser")
        self.exit_message = ""
        FakeApp.made.append(self)

    def run(self) -> None:
        pass


@pytest.fixture
def fake_app(monkeypatch: pytest.MonkeyPatch) -> list[FakeApp]:
    import wmtui.tui.app

    FakeApp.made = []
    monkeypatch.setattr(wmtui.tui.app, "WmtuiApp", FakeApp)
    return FakeApp.made


# -- tui is the default command ---------------------------------------------------------------
def test_tui_flags_work_without_writing_tui(fake_app, tmp_path: Path) -> None:
    out = tmp_path / "play"
    result = runner.invoke(app, ["--scheme", "pattern", *TINY, "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    (shown,) = fake_app
    assert shown.run_path == out and (out / "manifest.json").is_file()
    assert json.loads((out / "manifest.json").read_text())["command"] == "tui"
    session = shown.factory()  # what the screen would start: the thread choice comes first
    first = session.poll()[0]
    assert isinstance(first, Log) and first.message == "cpu threads: 1 (--threads)"


def test_scenario_and_debug_work_without_writing_tui(fake_app, tmp_path: Path) -> None:
    out = tmp_path / "gan"
    args = ["--scenario", "gan", "--epochs", "1", "--debug", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    (shown,) = fake_app
    assert shown.scenario.name == "gan" and shown.run_path == out
    assert json.loads((out / "manifest.json").read_text())["config"]["epochs"] == 1


def test_bad_default_command_input_is_one_line_and_writes_nothing(fake_app, tmp_path) -> None:
    out = tmp_path / "never"
    for args in (["--scenario", "gann"], ["--epochs", "0"], ["--threads", "0"]):
        result = runner.invoke(app, [*args, "--out", str(out)])
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("wmtui: error:"), lines
    assert not out.exists() and not fake_app


def test_commands_and_help_still_work() -> None:
    help_text = runner.invoke(app, ["--help"])
    assert help_text.exit_code == 0
    for command in ("train", "tui", "embed", "attack", "detect", "run", "replay"):
        assert f"\n  {command} " in help_text.output
    assert "tui is the default command" in help_text.output
    typo = runner.invoke(app, ["trian"])
    assert typo.exit_code == 2 and "Did you mean 'train'" in typo.output


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], []),
        (["--help"], ["--help"]),
        (["train", "--epochs", "1"], ["train", "--epochs", "1"]),
        (["--debug", "train"], ["--debug", "train"]),
        (["--dataset", "synthetic"], ["tui", "--dataset", "synthetic"]),
        (["--debug", "--scenario", "gan"], ["--debug", "tui", "--scenario", "gan"]),
        (["--scenario", "gan", "--debug"], ["--debug", "tui", "--scenario", "gan"]),
        (["nosuch"], ["nosuch"]),  # a bare word stays a command name
    ],
)
def test_default_to_tui(args: list[str], expected: list[str]) -> None:
    assert default_to_tui(args, {"--debug", "--help"}) == expected


# -- 80 columns, and which flag is whose ------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "terminal"),
    [
        (["attack", "--list"], 200),  # listings are 80 wide whatever the terminal
        (["run", "--list"], 200),
        (["data", "list"], 200),
        (["embed", "--help"], 80),  # help follows the terminal's width
        (["tui", "--help"], 80),
        (["attack", "--help"], 80),
        (["detect", "--help"], 80),
    ],
)
def test_listings_and_help_fit_80_columns(args: list[str], terminal: int) -> None:
    result = runner.invoke(app, args, terminal_width=terminal)
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_attack_list_wraps_under_its_flag() -> None:
    lines = runner.invoke(app, ["attack", "--list"]).stdout.splitlines()
    temperature = next(i for i, line in enumerate(lines) if "--temperature" in line)
    assert lines[temperature + 1].startswith(" " * 29) and lines[temperature + 1].strip()


def sections(help_text: str) -> dict[str, str]:
    """``--help`` output split at its unindented section titles."""
    found: dict[str, list[str]] = {}
    title = ""
    for line in help_text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            title = line[:-1]
            found[title] = []
        elif title:
            found[title].append(line)
    return {name: "\n".join(body) for name, body in found.items()}


def test_embed_help_groups_flags_by_scheme() -> None:
    found = sections(runner.invoke(app, ["embed", "--help"]).stdout)
    assert "--trigger STR" in found["pattern flags"]
    assert "--target-label INT" in found["pattern flags"]
    assert "--beta FLOAT" in found["newlabel flags"] and "--trigger" not in found["newlabel flags"]
    assert "--count INT" in found["abstract flags"] and "--images STR" in found["abstract flags"]
    # a shared flag shows under every scheme that takes it, with that scheme's help
    assert "label every key image gets" in found["unrelated flags"]
    assert "--trigger" not in found["Options"] and "--epochs" not in found["Options"]
    assert "--epochs INT" in found["Training options ([train] table)"]
    assert "--threads N" in found["Options"]


# -- --threads ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["train", "embed", "run", "resume", "attack", "detect"])
def test_threads_zero_is_one_line_exit_2(command: str, tmp_path: Path) -> None:
    args = {
        "run": ["run", "classic"],
        "resume": ["resume", str(tmp_path)],
        "attack": ["attack", "--attack", "ft-basic", "--run", str(tmp_path)],
        "detect": ["detect", "--method", "gan", "--run", str(tmp_path)],
    }.get(command, [command, *TINY])
    out = [] if command == "resume" else ["--out", str(tmp_path / "x")]
    result = runner.invoke(app, [*args, "--threads", "0", *out])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "wmtui: error: --threads must be between 1 and 1024, got 0"
    assert not (tmp_path / "x").exists()


def test_threads_is_applied_and_logged_into_the_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    try:
        result = runner.invoke(app, ["train", *TINY, "--threads", "2", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    first = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert first["event"] == "log" and first["message"] == "cpu threads: 2 (--threads)"
    assert "cpu threads: 2" in result.stderr


def test_default_threads_follow_the_policy(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    first = json.loads((out / "events.jsonl").read_text().splitlines()[0])
    assert first["message"] == "cpu threads: 1 (OMP_NUM_THREADS)"
