"""The SoK's success rule for a removal attack, and what the attack cost.

Lukas et al. ("SoK: How Robust is Image Classification Deep Neural Network Watermarking?",
IEEE S&P 2022, Section IV; WRT ``wrt/attacks/removal`` with the decision threshold of
``decision_threshold.py``) count a watermark as *removed* when both hold after the attack:

* the model is still useful: its test accuracy is at most ``margin`` (5 points, absolute)
  below the unmarked model's, so an attack that destroys the model is not a removal;
* the watermark is gone: the owner's key accuracy is at or below the decision threshold
  computed from unmarked null models (a model at or below it cannot be told from one that
  never saw the key).

Our binomial p-value stays beside this verdict; this one exists so a researcher can put our
numbers next to the SoK's. Every number the rule needs may be missing (no threshold was
computed for the run's dataset/architecture/scheme, no unmarked accuracy was given): then the
verdict is ``None`` and ``why`` names what is missing rather than guessing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: the SoK's utility margin: test accuracy within 5 points of the unmarked model's
MARGIN = 0.05


def _fraction(value: float | None) -> float | None:
    return None if value is None else float(value)


def judge(
    after_test_acc: float,
    wm_accuracy: float | None,
    reference_test_acc: float | None,
    threshold: float | None,
    margin: float = MARGIN,
) -> dict[str, Any]:
    """The SoK verdict: ``removed`` True/False, or None when a number it needs is missing.

    ``after_test_acc``: the attacked model's test accuracy; ``wm_accuracy``: the owner's key
    accuracy after the attack; ``reference_test_acc``: the unmarked model's test accuracy;
    ``threshold``: key accuracy at or below which a model counts as unmarked. All fractions.
    """
    kept = float(after_test_acc)
    wm, ref, thr = _fraction(wm_accuracy), _fraction(reference_test_acc), _fraction(threshold)
    missing = [
        what
        for what, value in (
            ("no key accuracy (the run has no key probe)", wm),
            ("no decision threshold (run wmtui threshold, or give --threshold)", thr),
            ("no unmarked accuracy (give --reference-acc, or compute a threshold)", ref),
        )
        if value is None
    ]
    removed: bool | None
    if missing:
        removed, why = None, "; ".join(missing)
    else:
        assert wm is not None and ref is not None and thr is not None
        useful = kept >= ref - margin - 1e-12
        gone = wm <= thr
        removed = useful and gone
        parts = [
            f"key acc {wm:.1%} {'<=' if gone else '>'} threshold {thr:.1%}",
            f"test acc {kept:.1%} {'within' if useful else 'more than'} "
            f"{margin * 100:g} points {'of' if useful else 'below'} {ref:.1%}",
        ]
        why = ", ".join(parts)
    return {
        "removed": removed,
        "kept_accuracy": kept,
        "wm_accuracy": wm,
        "threshold": thr,
        "reference_test_acc": ref,
        "why": why,
    }


def primary_key_accuracy(retention: Mapping[str, Any]) -> float | None:
    """The owner's key accuracy the rule judges: the original key's probe (``key``), not the
    keys switched to mid-run; for ``dual``, whose key streams a null and a true probe, the
    true-key accuracy (``key true``: the claim the owner makes, as the scheme's own
    ``probe`` picks). None when the run has no key."""
    for name in ("key", "key true"):
        value = retention.get(name)
        if isinstance(value, int | float):
            return float(value)
    return None


def cost(seconds: float, images: int = 0, labels: int = 0, queries: int = 0) -> dict[str, Any]:
    """What an attack spent: wall time of its work, attacker images used (labelled and
    unlabelled), true labels used, and answers asked of the suspect model."""
    return {
        "seconds": round(float(seconds), 2),
        "images": int(images),
        "labels": int(labels),
        "queries": int(queries),
    }


def yes_no(removed: bool | None) -> str:
    """``yes`` / ``no`` / ``unknown``: how every listing shows the verdict."""
    return "unknown" if removed is None else ("yes" if removed else "no")
