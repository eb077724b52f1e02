"""Answer filters a deployed model serves its answers through (docs/deploy.md). One module
per filter; importing the package registers them."""

from __future__ import annotations

from engine.filters import dawn as _dawn  # noqa: F401  (registers "dawn")
from engine.filters import strip as _strip  # noqa: F401  (registers "strip")
from engine.filters.registry import (
    FILTERS,
    AnswerFilter,
    filter_from_spec,
    make_filter,
    register_filter,
)

__all__ = ["FILTERS", "AnswerFilter", "filter_from_spec", "make_filter", "register_filter"]
