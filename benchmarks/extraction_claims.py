"""The extraction table's claims, decided from its rows: EWE against retraining (Jia et al.,
USENIX Security 2021) and DAWN against extraction and smooth retraining (Szyller et al.,
ACM MM 2021; the SoK, Lukas et al. S&P 2022).

Kept apart from ``extraction.py`` (which runs the jobs) so the verdicts can be read and
tested without running anything. Each claim is a statistical verdict on the seeds, never a
tolerance fitted to one run: "reproduces", "does not reproduce" or "inconclusive", with the
numbers it rests on.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

#: the significance level of every claim's test
ALPHA = 0.05
REPRODUCES, REFUTED, INCONCLUSIVE = "reproduces", "does not reproduce", "inconclusive"


def values(rows: Iterable[dict[str, Any]], scheme: str, attack: str, key: str) -> list[float]:
    """``key`` of the completed rows of (scheme, attack), one per seed."""
    return [
        float(r[key])
        for r in rows
        if r["scheme"] == scheme
        and r["attack"] == attack
        and r.get("status") == "completed"
        and isinstance(r.get(key), int | float)
    ]


def permutation_p(higher: Sequence[float], lower: Sequence[float]) -> float:
    """One-sided exact permutation p-value that ``higher``'s mean exceeds ``lower``'s: the
    share of relabellings of the pooled values whose mean difference is at least the observed
    one. With 3 seeds against 3 the smallest possible p is 1/20 = 0.05: all three above."""
    pooled = [*higher, *lower]
    observed = statistics.fmean(higher) - statistics.fmean(lower)
    count = total = 0
    for chosen in itertools.combinations(range(len(pooled)), len(higher)):
        first = [pooled[i] for i in chosen]
        rest = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        total += 1
        count += statistics.fmean(first) - statistics.fmean(rest) >= observed - 1e-12
    return count / total


def fmt(xs: Sequence[float]) -> str:
    if not xs:
        return "-"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{100 * statistics.fmean(xs):.1f} ± {100 * sd:.1f}% (n={len(xs)})"


def ewe_claim(rows: list[dict[str, Any]], attack: str = "retraining") -> dict[str, Any]:
    """Jia et al.: an entangled watermark survives extraction better than a plain backdoor.
    Compared on the key accuracy after ``attack``: EWE's seeds against pattern's."""
    ewe = values(rows, "ewe", attack, "wm_accuracy")
    pattern = values(rows, "pattern", attack, "wm_accuracy")
    claim = f"EWE keeps more watermark than pattern under {attack} (Jia et al.)"
    if len(ewe) < 2 or len(pattern) < 2:
        return {"claim": claim, "verdict": INCONCLUSIVE, "evidence": "fewer than 2 seeds each"}
    p = permutation_p(ewe, pattern)
    if statistics.fmean(ewe) <= statistics.fmean(pattern):
        verdict = REFUTED
    else:
        verdict = REPRODUCES if p <= ALPHA else INCONCLUSIVE
    evidence = (
        f"key accuracy after {attack}: ewe {fmt(ewe)}, pattern {fmt(pattern)}; one-sided "
        f"exact permutation p = {p:.3f}"
    )
    return {"claim": claim, "verdict": verdict, "evidence": evidence, "p": p}


def removed_counts(rows: list[dict[str, Any]], scheme: str, attack: str) -> tuple[int, int]:
    """(removed, judged) over the seeds of (scheme, attack)."""
    judged = [
        r["removed"]
        for r in rows
        if r["scheme"] == scheme
        and r["attack"] == attack
        and r.get("status") == "completed"
        and r.get("removed") is not None
    ]
    return sum(bool(v) for v in judged), len(judged)


def dawn_claims(
    rows: list[dict[str, Any]],
    extraction: Sequence[str],
    threshold: float | None,
    smooth: str = "smooth-retraining",
) -> list[dict[str, Any]]:
    """The SoK on DAWN: its mark is verifiable on models extracted from its API (key accuracy
    above the threshold, whatever the stolen model's accuracy: the owner's question is
    whether the copy carries the mark), and smooth retraining defeats it (removed in most
    seeds by the full rule)."""
    kept_claim = "DAWN is verifiable on models extracted from its API (SoK)"
    plain = [a for a in extraction if a != smooth]
    keys = {a: values(rows, "dawn", a, "wm_accuracy") for a in plain}
    keys = {a: v for a, v in keys.items() if v}
    if threshold is None or not keys:
        kept = {"claim": kept_claim, "verdict": INCONCLUSIVE, "evidence": "no threshold or rows"}
    else:
        verified = {a: sum(k > threshold for k in v) for a, v in keys.items()}
        hits, total = sum(verified.values()), sum(len(v) for v in keys.values())
        verdict = (
            REPRODUCES if 3 * hits >= 2 * total else REFUTED if 3 * hits <= total else INCONCLUSIVE
        )
        evidence = (
            f"key accuracy above the threshold {100 * threshold:.2f}% in {hits}/{total}: "
            + (", ".join(f"{a} {verified[a]}/{len(v)} ({fmt(v)})" for a, v in keys.items()))
        )
        kept = {"claim": kept_claim, "verdict": verdict, "evidence": evidence}
    removed, total = removed_counts(rows, "dawn", smooth)
    smooth_claim = "smooth retraining defeats DAWN (SoK)"
    if not total:
        defeat = {"claim": smooth_claim, "verdict": INCONCLUSIVE, "evidence": "no verdicts"}
    else:
        verdict = REPRODUCES if removed * 2 > total else REFUTED if removed == 0 else INCONCLUSIVE
        wm = values(rows, "dawn", smooth, "wm_accuracy")
        acc = values(rows, "dawn", smooth, "test_acc")
        evidence = f"removed {removed}/{total}; key accuracy {fmt(wm)}; stolen accuracy {fmt(acc)}"
        defeat = {"claim": smooth_claim, "verdict": verdict, "evidence": evidence}
    return [kept, defeat]


def claims_text(items: list[dict[str, Any]]) -> str:
    return "\n".join(f"- {c['claim']}: **{c['verdict']}** ({c['evidence']})" for c in items)
