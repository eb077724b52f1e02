"""wmtui engine: datasets, models, the training loop, watermarks, attacks, sessions.

Nothing in this package imports a UI library (textual, rich, typer); a test enforces it, so
that scripts, sweeps and notebooks can drive the engine without a terminal.
"""

__version__ = "0.1.0"
