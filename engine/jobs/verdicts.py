"""The ownership verdict in words, for the log of the job that embedded the key and for
``wmtui verify``: the decision and the condition that decided it come first and short
("key NOT verified: null accuracy 10.16% is below T 50%"), the numbers behind it after.

A dual embedding used to end at 51% test accuracy and 10% null accuracy without a word, and
``verify --claim`` then printed "retention 100.00%" and "p-value 1e-813" before a NOT
VERIFIED whose reason sat in a parenthesis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from engine.metrics import percent
from engine.session import JobContext


def verifying(index: int, count: int, name: str) -> str:
    """The progress line while key set ``index`` of ``count`` is verified (seconds each)."""
    return f"verifying key set {index}/{count} ({name}) on held-out samples"


def shown_p(verdict: Mapping[str, Any]) -> str:
    """The p-value as people read it; one below float range by its power of ten."""
    p = verdict.get("p_value")
    if not isinstance(p, int | float):
        return "-"
    return f"1e{verdict.get('log10_p_value', 0):.0f}" if p == 0.0 else f"{p:.3g}"


def failing_condition(verdict: Mapping[str, Any]) -> str:
    """Why a verdict is NOT verified, in one clause: the signature, an accuracy under the
    dual scheme's T, else the p-value not under alpha. Empty when it is verified."""
    if verdict.get("verified"):
        return ""
    if verdict.get("signature_valid") is False:
        return f"signature not valid ({verdict.get('null_reason', '')})"
    threshold = verdict.get("threshold")
    if isinstance(threshold, int | float):
        for name, label in (("null_acc", "null accuracy"), ("true_acc", "true accuracy")):
            value = verdict.get(name)
            if isinstance(value, int | float) and value < threshold:
                return f"{label} {percent(value)} is below T {100 * threshold:g}%"
    return f"p-value {shown_p(verdict)} is not below alpha {verdict.get('alpha', '-')}"


def verdict_line(name: str, verdict: Mapping[str, Any]) -> str:
    """``pirate claim: VERIFIED (p-value 1e-230)`` or ``pirate claim: NOT verified: null
    accuracy 10.16% is below T 50%``."""
    if verdict.get("verified"):
        return f"{name}: VERIFIED (p-value {shown_p(verdict)})"
    return f"{name}: NOT verified: {failing_condition(verdict)}"


def low_accuracy(test_acc: float | None, classes: int) -> str:
    """A warning when the model is closer to chance than to perfect: a watermark in a model
    nobody would use proves little, and the cause is usually too little training."""
    if test_acc is None or classes < 2 or test_acc >= (1 + 1 / classes) / 2:
        return ""
    return (
        f"test accuracy {percent(test_acc)} is low (chance is {percent(1 / classes)}): "
        "more --epochs or a larger --train-size"
    )


def log_verdicts(
    ctx: JobContext,
    verdicts: Mapping[str, Mapping[str, Any]],
    test_acc: float | None,
    classes: int,
) -> None:
    """The embedding's verdicts (and a low test accuracy) into the job's log, so the live
    view and a headless run end with them; a failed one is a warning."""
    warning = low_accuracy(test_acc, classes)
    if warning:
        ctx.log(warning, "warning")
    for name, verdict in verdicts.items():
        condition = failing_condition(verdict)
        if condition.startswith(("null accuracy", "true accuracy")):
            ctx.log(f"{name}: {condition}: the claim will not verify", "warning")
        ctx.log(verdict_line(f"{name} ownership", verdict), "warning" if condition else "info")
