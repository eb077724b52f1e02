"""Errors that mean "the user asked for something we cannot do".

Every front end maps :class:`UserError` to one clear line and exit code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: unknown names, invalid values, missing or corrupt files."""


class ConfigError(UserError):
    """A configuration value is out of range or of the wrong kind."""


class DataError(UserError):
    """A dataset is missing, unreadable or inconsistent."""


class RunError(UserError):
    """A run directory or model file is missing, corrupt or not writable."""


def closest(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' suffix, or '' when nothing is close; keeps error lines short."""
    match = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""


def unknown_name(kind: str, name: str, choices: Iterable[str]) -> ConfigError:
    """The one wording for every unknown registry name, so users learn to read it once."""
    choices = sorted(choices)
    return ConfigError(
        f"unknown {kind} {name!r}{closest(name, choices)}; choose one of: {', '.join(choices)}"
    )
