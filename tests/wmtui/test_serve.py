"""``wmtui serve``: the command each browser tab runs, the exposure warning, one-line errors.

No port is ever bound: ``Server.serve`` is replaced by a recorder where the CLI would start it.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from engine.errors import UserError
from tests.wmtui.test_replay import write_run
from wmtui.cli import app as cli_app
from wmtui.cli import replay as cli_replay
from wmtui.cli.common import DEBUG

runner = CliRunner()
WARNING = "anyone who can reach this port can watch and steer the session"


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Servers the CLI would have started, instead of starting them."""
    from textual_serve.server import Server

    started: list[object] = []
    monkeypatch.setattr(Server, "serve", lambda self, debug=False: started.append(self))
    monkeypatch.setitem(DEBUG, "on", False)
    return started


def argv(command: str) -> list[str]:
    """The served command minus the executable (script or ``python -m wmtui.cli``)."""
    words = shlex.split(command)
    prefix = len(cli_replay.wmtui_executable())
    assert words[:prefix] == cli_replay.wmtui_executable()
    return words[prefix:]


def test_localhost_server_runs_the_playground_without_a_warning(
    capsys: pytest.CaptureFixture[str], served: list[object]
) -> None:
    server = cli_replay.prepare_server("127.0.0.1", 8123, ["tui"], None)
    assert argv(server.command) == ["tui"]
    assert (server.host, server.port) == ("127.0.0.1", 8123)
    assert server.public_url == "http://127.0.0.1:8123"
    assert capsys.readouterr().err == ""
    assert served == []  # built, not started


def test_other_addresses_get_a_warning_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    server = cli_replay.prepare_server("0.0.0.0", 8000, ["tui"], "http://lab-pc:8000")
    err = capsys.readouterr().err
    assert WARNING in err and "0.0.0.0" in err and len(err.strip().splitlines()) == 1
    assert server.public_url == "http://lab-pc:8000"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("gpu-box.example.org", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert cli_replay.is_loopback(host) is loopback
    assert (cli_replay.exposure_warning(host) is None) is loopback


def test_paths_with_spaces_survive_the_shell(tmp_path: Path) -> None:
    run = write_run(tmp_path / "a run; rm -rf x")
    args = cli_replay.served_args(run, None, ["--speed", "4"])
    command = cli_replay.serve_command(args)
    assert argv(command) == ["replay", str(run.resolve()), "--speed", "4"]


def test_without_a_wmtui_script_the_module_is_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    assert cli_replay.wmtui_executable() == [str(tmp_path / "python"), "-m", "wmtui.cli"]
    (tmp_path / "wmtui").write_text("")
    assert cli_replay.wmtui_executable() == [str(tmp_path / "wmtui")]


def test_scenarios_are_checked_up_front_and_no_options_serve_the_start_screen() -> None:
    assert cli_replay.served_args(None, "gan", []) == ["tui", "--scenario", "gan"]
    with pytest.raises(UserError, match="did you mean 'classic'"):
        cli_replay.served_args(None, "clasic", [])
    assert cli_replay.served_args(None, None, []) == []
    assert cli_replay.served_args(None, None, ["--epochs", "1"]) == ["tui", "--epochs", "1"]


def test_a_folder_named_like_a_preset_serves_the_preset(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "gan").mkdir()
    assert cli_replay.served_args(None, "gan", []) == ["tui", "--scenario", "gan"]
    (tmp_path / "mine.toml").write_text('[[phases]]\nkind = "train"\n')
    served = cli_replay.served_args(None, "mine.toml", [])
    assert served == ["tui", "--scenario", str(tmp_path / "mine.toml")]


# -- through the CLI ------------------------------------------------------------------------
def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wmtui: error:"), lines
    return lines[0]


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_port_out_of_range_is_exit_2(port: str, served: list[object]) -> None:
    assert "--port must be between 1 and 65535" in one_error_line(
        runner.invoke(cli_app, ["serve", "--port", port])
    )
    assert served == []


def test_replay_of_a_missing_run_is_refused_before_serving(
    tmp_path: Path, served: list[object]
) -> None:
    line = one_error_line(runner.invoke(cli_app, ["serve", "--replay", str(tmp_path / "nope")]))
    assert "run directory not found" in line and served == []


def test_replay_and_scenario_exclude_each_other(tmp_path: Path, served: list[object]) -> None:
    run = write_run(tmp_path / "run")
    result = runner.invoke(cli_app, ["serve", "--replay", str(run), "--scenario", "classic"])
    assert "exclude each other" in one_error_line(result)


def test_serve_replay_passes_extra_options_on(tmp_path: Path, served: list[object]) -> None:
    run = write_run(tmp_path / "run")
    result = runner.invoke(
        cli_app, ["--debug", "serve", "--port", "8765", "--replay", str(run), "--speed", "16"]
    )
    assert result.exit_code == 0, result.output
    (server,) = served
    assert argv(server.command) == ["--debug", "replay", str(run.resolve()), "--speed", "16"]
    assert server.port == 8765 and WARNING not in result.stderr


def test_serve_on_all_interfaces_warns(served: list[object]) -> None:
    result = runner.invoke(cli_app, ["serve", "--host", "0.0.0.0", "--", "--dataset", "synthetic"])
    assert result.exit_code == 0, result.output
    assert WARNING in result.stderr
    (server,) = served
    assert argv(server.command) == ["tui", "--dataset", "synthetic"]
