"""wmtui front ends: the typer CLI (headless) and the Textual playground."""

from engine import __version__

__all__ = ["__version__"]
