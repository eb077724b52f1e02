"""The one resolver for "a preset name or a TOML file", shared by scenarios, recipes and sweeps.

Presets ship inside this package (``engine/studies/presets/<kind>/NAME.toml``: scenarios,
recipes, sweep grids and chains of stacked attacks) and are read
through :mod:`importlib.resources`, so an installed wheel finds them with no source tree.

The rule, the same for every kind: only an existing ``.toml`` file wins over a preset;
a preset name wins over anything else of that name in the current directory (a run folder
called ``gan``, a file called ``classic`` without a suffix), because users name their run
folders after the presets they ran.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, unknown_name

#: the preset kinds, by the word users read in messages, and their folders
KINDS = {
    "scenario": "scenarios",
    "recipe": "recipes",
    "sweep grid": "sweeps",
    "chain": "chains",
}


@dataclass(frozen=True)
class Source:
    """Where a study's TOML comes from: a preset (``preset`` is its name) or a user file."""

    name: str
    location: Traversable | Path
    preset: bool

    def __str__(self) -> str:
        return str(self.location)

    def read(self) -> dict[str, Any]:
        """The parsed TOML; every failure is one line naming the file."""
        try:
            return tomllib.loads(self.location.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{self.location}: not valid TOML ({exc})") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {self.location}: {exc.strerror or exc}") from None


def preset_dir(kind: str) -> Traversable:
    return resources.files("engine.studies") / "presets" / KINDS[kind]


def preset_names(kind: str) -> list[str]:
    folder = preset_dir(kind)
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in folder.iterdir()
        if entry.is_file() and entry.name.endswith(".toml")
    )


def resolve(kind: str, name_or_file: str | Path) -> Source:
    """What a ``NAME|FILE`` argument means (see the module's rule); a miss is one line with
    the closest preset's name."""
    text = str(name_or_file)
    path = Path(text)
    if path.suffix == ".toml" and path.is_file():
        return Source(path.stem, path, preset=False)
    names = preset_names(kind)
    if text in names:
        return Source(text, preset_dir(kind) / f"{text}.toml", preset=True)
    if path.is_file():
        return Source(path.stem, path, preset=False)
    if path.is_dir():
        raise ConfigError(f"{kind} {path} is a folder; give a preset name or a TOML file")
    if path.suffix == ".toml" or len(path.parts) > 1:
        raise ConfigError(f"{kind} file not found: {path}")
    raise unknown_name(kind, text, names)
