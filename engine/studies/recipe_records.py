"""``--suggest-into FILE``: a copy of a recipe with this run's regression records written in.

Pasting forty records by hand is where one ends up under the wrong name. The copy is the
recipe's own text, comments kept, with its ``[regression.<scale>]`` table (if any) replaced by
one holding this run's records at the end of the file; the copy is read back as a recipe and
refused unless every recorded cell now holds exactly the values measured. It is a new file,
never the recipe itself: reviewing the difference is the point.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, RunError, UserError
from engine.io import atomic_write_bytes
from engine.studies.recipe_check import suggest_expectations, suggestions
from engine.studies.recipe_file import Recipe, recipe_from_mapping

_HEADER = re.compile(r"^\s*\[")

_CANNOT = (
    "--suggest-into: {source} would not read back with the records in ({why}); "
    "print them with --suggest and paste them by hand"
)


def check_target(target: Path) -> None:
    """Refuse a copy that could not be written, before anything runs."""
    if target.exists():
        raise UserError(f"--suggest-into: {target} exists; name a new file (the copy)")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"--suggest-into: {parent} is a file, not a folder")
            break


def write_records(recipe: Recipe, result: Mapping[str, Any], target: Path) -> int:
    """Write the copy; the number of cells recorded. Nothing is written on any refusal."""
    check_target(target)
    source = Path(recipe.path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
    scale = str(result["scale"])
    updated = with_table(text, scale, suggest_expectations(result))
    try:
        copy = recipe_from_mapping(tomllib.loads(updated), recipe.name, str(target))
    except (tomllib.TOMLDecodeError, UserError) as exc:
        raise ConfigError(_CANNOT.format(source=source, why=exc)) from None
    measured = {name: _values(result, name) for name, _, line in suggestions(result) if line}
    for cell in copy.cells:
        held = cell.regression.get(scale)
        if cell.name in measured and (held is None or held.values != measured[cell.name]):
            raise ConfigError(_CANNOT.format(source=source, why=f"{cell.name!r} differs"))
    try:
        atomic_write_bytes(target, updated.encode())
    except OSError as exc:
        raise RunError(f"--suggest-into: cannot write {target}: {exc.strerror or exc}") from None
    return len(measured)


def _values(result: Mapping[str, Any], name: str) -> dict[str, float | None]:
    """The cell's trial values as its record reads them back (``"n/a"`` reads as None)."""
    for cell in result["cells"]:
        if cell["name"] == name:
            values = (cell.get("trial_values") or {}).items()
            return {k: None if v is None else float(v) for k, v in values}
    return {}


def with_table(text: str, scale: str, table: list[str]) -> str:
    """``text`` without its ``[regression.<scale>]`` table (up to the next header), with
    ``table`` at the end."""
    header = f"[regression.{scale}]"
    kept: list[str] = []
    skipping = False
    for line in text.splitlines():
        if _HEADER.match(line):
            skipping = line.split("#")[0].strip() == header
        if not skipping:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join([*kept, "", *table]) + "\n"
