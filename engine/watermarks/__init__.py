"""Watermark schemes, one module each, registered by ``@register_scheme``."""

from engine.watermarks import abstract as _abstract  # noqa: F401  (registers "abstract")
from engine.watermarks import blackmarks as _blackmarks  # noqa: F401
from engine.watermarks import datafree as _datafree  # noqa: F401
from engine.watermarks import dawn as _dawn  # noqa: F401
from engine.watermarks import deepsigns as _deepsigns  # noqa: F401
from engine.watermarks import dual as _dual  # noqa: F401
from engine.watermarks import ewe as _ewe  # noqa: F401
from engine.watermarks import exp_weighting as _exp_weighting  # noqa: F401
from engine.watermarks import frontier as _frontier  # noqa: F401
from engine.watermarks import newlabel as _newlabel  # noqa: F401
from engine.watermarks import pattern as _pattern  # noqa: F401
from engine.watermarks import uchida as _uchida  # noqa: F401
from engine.watermarks import unrelated as _unrelated  # noqa: F401
from engine.watermarks.base import (
    KEY_JSON,
    SCHEMES,
    Key,
    KeyContext,
    KeySamples,
    Watermark,
    check_key_matches,
    get_scheme,
    load_key,
    parse_scheme_params,
    register_scheme,
    save_key,
)
from engine.watermarks.triggers import make_trigger, stamp

__all__ = [
    "KEY_JSON",
    "SCHEMES",
    "Key",
    "KeyContext",
    "KeySamples",
    "Watermark",
    "check_key_matches",
    "get_scheme",
    "load_key",
    "make_trigger",
    "parse_scheme_params",
    "register_scheme",
    "save_key",
    "stamp",
]
