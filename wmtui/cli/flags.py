"""The flags every headless command shares, declared once.

Apart from :mod:`wmtui.cli.common` because that module loads the engine (and torch); commands
that stay light until they run (``report``, ``sweep``) declare their options from here too.
"""

from __future__ import annotations

from typing import Annotated

import typer

JsonFlag = Annotated[bool, typer.Option("--json", help="one JSON object per line on stdout")]
DeviceOption = Annotated[
    str, typer.Option("--device", help="compute device: auto|cpu|cuda (auto: cuda if present)")
]
#: a study's device: every trial's, or (unset) the one each trial's scenario names
StudyDeviceOption = Annotated[
    str | None,
    typer.Option("--device", help="compute device of every trial: auto|cpu|cuda"),
]
