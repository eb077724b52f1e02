"""95% intervals around a recipe cell's mean, so a verdict on the paper says how sure it is.

Three seeds of a 0/1 outcome ("the target is flagged": 3 of 3) say little about a rate, and
a normal interval around 1.0 would claim certainty (its sd is 0). Outcome cells therefore use
the Wilson score interval, which stays honest at small n and at 0% or 100%; numeric cells use
Student's t (mean ± t·sd/√n), whose critical values are tabled here so the engine needs no
scipy. Both are the textbook 95% two-sided intervals.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: the standard normal's 97.5% quantile
Z95 = 1.959963984540054

#: Student's t 97.5% quantiles for 1..30 degrees of freedom
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def t95(df: int) -> float:
    """Student's t 97.5% quantile; past the table, the Cornish-Fisher expansion (within
    0.001 of the exact value from 30 degrees of freedom on)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T95):
        return _T95[df - 1]
    z = Z95
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def wilson(successes: float, n: int) -> tuple[float, float]:
    """The Wilson score interval of a rate, as fractions in [0, 1]."""
    if n < 1:
        raise ValueError("a rate needs at least one trial")
    rate = successes / n
    z2 = Z95 * Z95
    denominator = 1 + z2 / n
    centre = (rate + z2 / (2 * n)) / denominator
    half = Z95 * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mean_interval(values: Sequence[float]) -> tuple[float, float] | None:
    """mean ± t·sd/√n; None under two values (one value has no spread to go on)."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    half = t95(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


def interval95(values: Sequence[float], outcome: bool, scale: float) -> tuple[float, float] | None:
    """The cell's 95% interval in its unit: Wilson for an outcome (each value 0 or ``scale``,
    i.e. 0 or 100 for a percentage), t for a number; None when there is too little to go on."""
    if not values:
        return None
    if outcome:
        low, high = wilson(sum(values) / scale, len(values))
        return low * scale, high * scale
    return mean_interval(values)
