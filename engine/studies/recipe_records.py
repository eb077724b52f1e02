"""``--suggest-into FILE``: a copy of a recipe with this run's regression records written in.

Pasting forty ``regression.quick`` lines by hand is where a record ends up under the wrong
cell. The copy is the recipe's own text, comments kept, with each cell's line put at the end of
its ``[[cells]]`` block (replacing that scale's old one-line record); the result is read back
as a recipe and refused unless every cell now holds exactly the values measured. The copy is a
new file, never the recipe itself: reviewing the difference is the point.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, UserError
from engine.io import atomic_write_bytes
from engine.studies.recipe_check import suggestions
from engine.studies.recipe_file import Recipe, recipe_from_mapping

_HEADER = re.compile(r"^\s*\[")
_CELLS = re.compile(r"^\s*\[\[\s*cells\s*\]\]\s*(#.*)?$")
_NAME = re.compile(r"^\s*name\s*=")


def records(result: Mapping[str, Any]) -> dict[str, str]:
    """Each recordable cell's name and its ``regression.<scale> = {...}`` line."""
    return {name: line for name, _, line in suggestions(result) if line}


def write_records(recipe: Recipe, result: Mapping[str, Any], target: Path) -> int:
    """Write the copy; the number of cells recorded. Nothing is written on any refusal."""
    if target.exists():
        raise UserError(f"--suggest-into: {target} exists; name a new file (the copy)")
    source = Path(recipe.path)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {source}: {exc.strerror or exc}") from None
    found = records(result)
    scale = str(result["scale"])
    updated = _insert(text, found, scale)
    try:
        copy = recipe_from_mapping(tomllib.loads(updated), recipe.name, str(target))
    except (tomllib.TOMLDecodeError, UserError):
        raise ConfigError(_CANNOT.format(source=source)) from None
    for cell in copy.cells:
        if cell.name in found:
            wanted = {k: v for k, v in _values(result, cell.name).items() if v is not None}
            held = cell.regression.get(scale)
            if held is None or held.values != wanted:
                raise ConfigError(_CANNOT.format(source=source))
    atomic_write_bytes(target, updated.encode())
    return len(found)


_CANNOT = (
    "--suggest-into: could not place the records in {source}'s [[cells]] tables "
    "(print them with --suggest and paste them by hand)"
)


def _values(result: Mapping[str, Any], name: str) -> dict[str, float | None]:
    for cell in result["cells"]:
        if cell["name"] == name:
            return dict(cell.get("trial_values") or {})
    return {}


def _insert(text: str, found: Mapping[str, str], scale: str) -> str:
    """``text`` with each named cell's block ending in its record line."""
    lines = text.splitlines()
    out: list[str] = []
    block: list[str] | None = None

    def flush() -> None:
        nonlocal block
        if block is None:
            return
        name = _block_name(block)
        if name in found:
            block = [ln for ln in block if not ln.lstrip().startswith(f"regression.{scale}")]
            last = max(i for i, ln in enumerate(block) if ln.strip()) + 1
            block[last:last] = [found[name]]
        out.extend(block)
        block = None

    for line in lines:
        if _HEADER.match(line):
            flush()
            if _CELLS.match(line):
                block = [line]
                continue
        (out if block is None else block).append(line)
    flush()
    return "\n".join(out) + "\n"


def _block_name(block: list[str]) -> str | None:
    for line in block:
        if _NAME.match(line):
            try:
                return str(tomllib.loads(line.strip()).get("name"))
            except tomllib.TOMLDecodeError:
                return None
    return None
