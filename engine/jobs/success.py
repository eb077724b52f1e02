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

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

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


def check_fraction(flag: str, value: float | None) -> float | None:
    """A user's ``--threshold`` / ``--reference-acc``: a fraction in [0, 1], or one line."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{flag} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ConfigError(f"{flag} must be in [0, 1] (a fraction: 0.9 for 90%), got {value}")
    return number


@dataclasses.dataclass(frozen=True)
class SoKJudge:
    """The rule's numbers for one attacked run, found once per job: the user's values
    first, else the cached threshold record of the owner's (dataset, architecture, scheme,
    key size), whose null models' mean test accuracy is the unmarked reference."""

    threshold: float | None = None
    reference_test_acc: float | None = None
    #: where each came from: "given", "null models", or "" (missing)
    threshold_source: str = ""
    reference_source: str = ""
    #: the command that computes the owner's threshold, named when it is missing
    hint: str = ""
    #: why the rule has nothing to judge (:func:`engine.jobs.judges.nothing_to_remove`):
    #: the verdict is then None with this reason, the numbers are kept
    nothing: str = ""

    @classmethod
    def for_run(
        cls,
        run_dir: Path,
        dataset: str,
        arch: str,
        *,
        threshold: float | None = None,
        reference_acc: float | None = None,
    ) -> SoKJudge:
        record, hint = None, ""
        if threshold is None or reference_acc is None:
            record, hint = owner_threshold(run_dir, dataset, arch)
        thr = threshold if threshold is not None else (record.threshold if record else None)
        ref = reference_acc
        if ref is None and record is not None:
            ref = record.null_test_acc_mean
        return cls(
            thr,
            ref,
            "given" if threshold is not None else ("null models" if thr is not None else ""),
            "given" if reference_acc is not None else ("null models" if ref is not None else ""),
            hint,
        )

    def judge(self, scores: Mapping[str, Any]) -> dict[str, Any]:
        """The verdict on the referee's ``scores`` after an attack (``test_acc``,
        ``retention``)."""
        verdict = judge(
            float(scores.get("test_acc") or 0.0),
            primary_key_accuracy(scores.get("retention") or {}),
            self.reference_test_acc,
            self.threshold,
        )
        if self.hint and self.threshold is None:
            verdict["why"] = verdict["why"].replace("run wmtui threshold", self.hint)
        if self.nothing:
            verdict |= {"removed": None, "why": self.nothing}
        return verdict


def owner_threshold(run_dir: Path, dataset: str, arch: str) -> tuple[Any, str]:
    """The cached threshold record for the owner's key of ``run_dir`` (or of the run it was
    attacked from), None when the run has no key or none was computed; and the command that
    computes it (empty without a key)."""
    from engine.jobs.referee import key_run
    from engine.jobs.threshold import find_threshold, key_size_of, threshold_hint
    from engine.runs import KEY_DIR
    from engine.watermarks import load_key

    owner = key_run(run_dir)
    if owner is None:
        return None, ""
    key = load_key(owner / KEY_DIR)
    size = key_size_of(key.scheme, key.params)
    hint = threshold_hint(dataset, arch, key.scheme, size)
    return find_threshold(dataset, arch, key.scheme, size), hint


def _pct(value: Any) -> str:
    return "-" if not isinstance(value, int | float) else f"{value:.1%}"


def verdict_lines(summary: Mapping[str, Any], width: int = 80) -> list[str]:
    """The verdict, the numbers it was made from and the cost, each line at most ``width``
    columns: what ``wmtui attack`` prints and the attack's log ends with."""
    import textwrap

    lines = [
        f"removed: {yes_no(summary.get('removed'))} (the SoK's rule)",
        f"  kept accuracy {_pct(summary.get('kept_accuracy'))} "
        f"(unmarked {_pct(summary.get('reference_test_acc'))}), "
        f"key accuracy {_pct(summary.get('wm_accuracy'))} "
        f"vs threshold {_pct(summary.get('threshold'))}",
    ]
    if summary.get("rule") == "white-box":  # judged on the BER by the scheme's verifier
        ber, p = summary.get("ber"), summary.get("p_value")
        read = "unreadable" if ber is None else f"{ber:.2f} of {summary.get('bits')} bits"
        lines[1] = (
            f"  kept accuracy {_pct(summary.get('kept_accuracy'))} "
            f"(unmarked {_pct(summary.get('reference_test_acc'))}), key BER {read}"
            + ("" if p is None else f", p {p:.2g}")
        )
    why = str(summary.get("why") or "")
    if why:
        lines += textwrap.wrap(why, width, initial_indent="  why: ", subsequent_indent="    ")
    spent = summary.get("cost")
    if isinstance(spent, Mapping):
        lines.append(cost_line(spent))
    return [line[:width] for line in lines]


def cost_line(spent: Mapping[str, Any]) -> str:
    """``cost: 12.3 s, 1200 images (1000 labelled), 0 queries``."""
    return f"cost: {cost_text(spent)}"


def cost_text(spent: Any) -> str:
    """An attack's cost in words (reports, listings); "–" when there is none."""
    if not isinstance(spent, Mapping):
        return "–"
    return (
        f"{float(spent.get('seconds') or 0):.1f} s, {int(spent.get('images') or 0)} "
        f"images ({int(spent.get('labels') or 0)} labelled), "
        f"{int(spent.get('queries') or 0)} queries"
    )
