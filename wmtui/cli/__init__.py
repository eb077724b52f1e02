"""The headless wing: typer commands over the engine's jobs. Textual is imported only inside
the commands that open the playground (an import test holds this)."""

from wmtui.cli.main import app, main

__all__ = ["app", "main"]
