import subprocess
import sys


def test_engine_imports_no_ui_library() -> None:
    """The engine must run headless: importing all of it pulls in no textual/rich/typer."""
    code = (
        "import sys, engine, engine.jobs, engine.session, engine.training, engine.runs, "
        "engine.data, engine.models, engine.metrics, engine.config\n"
        "bad = [m for m in ('textual', 'rich', 'typer') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_cli_module_does_not_import_textual() -> None:
    """Headless commands start without loading Textual (only `tui` imports it)."""
    code = "import sys, wmtui.cli\nprint('textual' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"
