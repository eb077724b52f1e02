"""Measurements: accuracy on test data and key sets (the referee's), ownership p-values, and
the outlier statistics a trigger scan decides with (MAD anomaly index, gap)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from statistics import NormalDist

import torch
from torch import nn

from engine import stopping
from engine.data.base import as_float
from engine.errors import ConfigError

Transform = Callable[[torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class Probe:
    """A labelled set the referee scores: the test set, or a key set (retention).

    ``transform`` stamps a trigger onto float images; ``classes`` limits the argmax to the
    first K outputs (new-label models report normal accuracy over the original classes).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    transform: Transform | None = None
    classes: int | None = None


def prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """uint8 batch -> model input, in the memory format the model was moved to."""
    out = as_float(x)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


@torch.no_grad()
def accuracy(model: nn.Module, probe: Probe, *, batch_size: int = 1024, amp: bool = False) -> float:
    """Fraction of ``probe`` classified as labelled; one host sync at the end."""
    n = len(probe.x)
    if n == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    channels_last = amp
    correct = torch.zeros((), dtype=torch.long, device=probe.x.device)
    try:
        for start in range(0, n, batch_size):
            stopping.check()  # many probes x many batches: seconds on a CPU
            x = prepare(probe.x[start : start + batch_size], channels_last)
            if probe.transform is not None:
                x = probe.transform(x)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
                logits = model(x)
            if probe.classes is not None:
                logits = logits[:, : probe.classes]
            correct += (logits.argmax(1) == probe.y[start : start + batch_size]).sum()
    finally:
        model.train(was_training)
    return correct.item() / n


# -- ownership verification ------------------------------------------------------------
def _log_binom_pmf(k: int, n: int, log_p: float, log_q: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(k + 1)
        - math.lgamma(n - k + 1)
        + k * log_p
        + (n - k) * log_q
    )


def log_binomial_tail(matches: int, n: int, p: float) -> float:
    """ln P[X >= matches] for X ~ Binomial(n, p), summed exactly in log space (no scipy).

    Ownership claims live far in the tail (1e-6 and far below), where ``1 - cdf`` loses
    every digit; summing the upper terms with log-sum-exp keeps them, even past the point
    where the probability itself underflows to 0.0.
    """
    if not 0 <= matches <= n:
        raise ValueError(f"matches must be in [0, {n}], got {matches}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    if matches == 0 or p >= 1.0:
        return 0.0
    if p <= 0.0:
        return -math.inf
    log_p, log_q = math.log(p), math.log1p(-p)
    terms = [_log_binom_pmf(k, n, log_p, log_q) for k in range(matches, n + 1)]
    top = max(terms)
    return min(0.0, top + math.log(sum(math.exp(t - top) for t in terms)))


def binomial_tail(matches: int, n: int, p: float) -> float:
    """P[X >= matches] for X ~ Binomial(n, p) (0.0 once it underflows)."""
    return math.exp(log_binomial_tail(matches, n, p))


def rate_upper_bound(hits: int, n: int, z: float = 3.0) -> float:
    """Wilson upper bound of a rate seen as ``hits``/``n``.

    A null rate estimated on other images than the key's is itself a sample: using the raw
    rate would let a fresh key whose images happen to sit above it claim the model more
    often than alpha says. z=3 keeps that excess negligible at a few thousand null images.
    """
    if n <= 0:
        return 1.0
    p = hits / n
    centre = p + z * z / (2 * n)
    margin = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return min(1.0, (centre + margin) / (1 + z * z / n))


@dataclasses.dataclass
class Verdict:
    """The referee's ownership decision for one key against one model.

    ``null_rate`` is the match probability of a model *not* trained with this key: never
    below chance (1/K), and raised to the suspect's own rate of giving the key label to the
    clean counterparts of the key samples where they exist (a model that already calls every
    shoe a "sneaker" must not be credited for calling stamped shoes one), and to its rate on
    *decoys* where the scheme has them: the same held-out images stamped with triggers of
    the same kind, place and strength but another (publicly seeded) pattern, so a model that
    answers the key label for "anything in that corner" or "any faint noise" cannot be
    claimed by an arbitrary key. The decision is the binomial tail of the observed matches
    under that rate, never ``retention > 0``.
    """

    retention: float
    matches: int
    n_key: int
    null_rate: float
    p_value: float
    alpha: float
    verified: bool
    log10_p_value: float = 0.0
    test_acc: float | None = None
    clean_rate: float | None = None
    decoy_rate: float | None = None
    null_reason: str = ""
    #: dual embedding (Algorithm 3): null and true accuracy, and whether the claim's
    #: signature holds; None for the other schemes
    null_acc: float | None = None
    true_acc: float | None = None
    signature_valid: bool | None = None
    #: dual embedding: T, the accuracy the null and the true embedding must each reach
    threshold: float | None = None
    #: multi-bit schemes (Blackmarks): the share of decoded bits that differ from the
    #: signature (``retention`` is then the bit accuracy); None for the others
    ber: float | None = None

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


def make_verdict(
    matches: int,
    n_key: int,
    *,
    chance: float,
    alpha: float,
    clean_rate: float | None = None,
    decoy_rate: float | None = None,
    test_acc: float | None = None,
    clean_what: str = "the clean counterparts",
) -> Verdict:
    """Retention, null rate ``max(chance, clean rate, decoy rate)``, exact p-value and the
    decision at ``alpha``; ``null_reason`` says which of the three set the rate."""
    if n_key <= 0:
        raise ValueError("a verdict needs at least one key sample")
    # (rate, why it is the null, how it reads when another one is higher)
    candidates = [(chance, f"chance 1/{round(1 / chance)}", "")]
    if clean_rate is not None:
        candidates.append((clean_rate, f"model's rate on {clean_what}", "clean rate"))
    if decoy_rate is not None:
        candidates.append((decoy_rate, "model's rate on decoy triggers", "decoy rate"))
    best = max(range(len(candidates)), key=lambda i: candidates[i][0])  # ties: the first
    null, reason, _ = candidates[best]
    lower = [
        f"{short} {rate:.4f}"
        for i, (rate, _, short) in enumerate(candidates)
        if i != best and short
    ]
    if lower:
        reason += " (" + ", ".join(lower) + " lower)"
    log_tail = log_binomial_tail(matches, n_key, null)
    p_value = math.exp(log_tail)
    return Verdict(
        retention=matches / n_key,
        matches=matches,
        n_key=n_key,
        null_rate=null,
        p_value=p_value,
        alpha=alpha,
        verified=log_tail < math.log(alpha),
        log10_p_value=round(log_tail / math.log(10), 3),
        test_acc=test_acc,
        clean_rate=clean_rate,
        decoy_rate=decoy_rate,
        null_reason=reason,
    )


@torch.no_grad()
def predictions(
    model: nn.Module,
    x: torch.Tensor,
    transform: Transform | None = None,
    *,
    classes: int | None = None,
    batch_size: int = 1024,
) -> torch.Tensor:
    """Argmax labels of uint8 images ``x`` (optionally stamped by ``transform``)."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(x), batch_size):
            stopping.check()
            batch = as_float(x[start : start + batch_size])
            if transform is not None:
                batch = transform(batch)
            logits = model(batch)
            if classes is not None:
                logits = logits[:, :classes]
            out.append(logits.argmax(1))
    finally:
        model.train(was_training)
    if not out:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return torch.cat(out)


def percent(value: float | None) -> str:
    """A rate as people read it (``87.50%``), ``-`` when not measured: the one formatter of
    every log line, table and status bar."""
    return "-" if value is None else f"{100 * value:.2f}%"


# -- outlier statistics of per-class trigger sizes (Neural Cleanse's MAD rule) ---------------
MAD_CONSISTENCY = 1.4826
FLAG_INDEX = 2.0


def anomaly_indices(sizes: list[float]) -> list[float]:
    """Neural Cleanse's anomaly index of every class: (median - size) / (1.4826 * MAD).

    Positive below the median (the direction a watermark target lies in). With MAD = 0
    (all sizes equal) nothing is anomalous: indices are 0, or +/-inf for a class that
    differs from a perfectly flat rest.
    """
    if not sizes:
        return []
    values = torch.tensor(sizes, dtype=torch.float64)
    median = _median(values)
    mad = _median((values - median).abs()) * MAD_CONSISTENCY
    out = []
    for v in values.tolist():
        diff = median - v
        if mad > 0:
            out.append(diff / mad)
        else:
            out.append(0.0 if diff == 0 else math.copysign(math.inf, diff))
    return out


def mad_flag_line(sizes: list[float], index: float = 2.0, gap: float = 1.0) -> float | None:
    """The size at or below which the smallest class is flagged by the MAD rule (anomaly
    index ``index``, and ``gap`` times below the next class): the line a bar must cross
    (None until three classes are known)."""
    if len(sizes) < 3:
        return None
    values = torch.tensor(sizes, dtype=torch.float64)
    median = _median(values)
    mad = _median((values - median).abs()) * MAD_CONSISTENCY
    return min(median - index * mad, sorted(sizes)[1] / gap)


def _median(values: torch.Tensor) -> float:
    """The true median (mean of the middle two for even counts), as Neural Cleanse uses."""
    ordered = values.sort().values
    n = len(ordered)
    mid = n // 2
    return float(ordered[mid]) if n % 2 else float((ordered[mid - 1] + ordered[mid]) / 2)


RULES = ("mad", "threshold", "both", "either")


def gap_ratio(sizes: list[float]) -> float:
    """The second-smallest size over the smallest: how far the most suspicious class stands
    below ALL the others (a watermark target is alone down there)."""
    if len(sizes) < 2:
        return 1.0
    first, second = sorted(sizes)[:2]
    return second / first if first > 0 else math.inf


def decide(
    sizes: list[float],
    *,
    rule: str = "mad",
    threshold: float | None = None,
    gap: float = 1.0,
) -> tuple[int | None, float, list[float]]:
    """(flagged class or None, anomaly index of the smallest, all indices).

    Only the smallest class can be flagged. ``mad``: its anomaly index >= 2 and the next
    smallest class at least ``gap`` times its size; ``threshold``: its size < T; ``both`` /
    ``either``: the two tests combined.

    Why the gap: the MAD index alone measures distance from the median in units of the
    spread, so when most classes cluster tightly, a class that is naturally a little
    smaller (or two such classes together: synthetic digits 2 and 3) reaches index 2-3 on
    clean models, while the next class sits within 1.1x of it. A trigger makes one class
    stand alone below every other.
    """
    if rule not in RULES:
        raise ConfigError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    indices = anomaly_indices(sizes)
    if not sizes:
        return None, 0.0, indices
    smallest = min(range(len(sizes)), key=lambda i: sizes[i])
    index = indices[smallest]
    by_mad = index >= FLAG_INDEX and gap_ratio(sizes) >= gap
    by_threshold = threshold is not None and sizes[smallest] < threshold
    if rule in ("threshold", "both", "either") and threshold is None:
        raise ConfigError(f"rule {rule!r} needs a threshold")
    flagged = {
        "mad": by_mad,
        "threshold": by_threshold,
        "both": by_mad and by_threshold,
        "either": by_mad or by_threshold,
    }[rule]
    return (smallest if flagged else None), index, indices


# -- the SoK's decision threshold (Lukas et al., S&P 2022) ----------------------------------
def decision_threshold(
    key_accs: Sequence[float], p: float = 0.05, *, key_size: int | None = None
) -> float:
    """Key accuracy at or below which a model counts as unmarked, from the key accuracies of
    models trained without the watermark (null models).

    The estimator of WRT ``decision_threshold.py`` (``__compute_decision_threshold``): fit a
    normal N(mu, sigma) to the null accuracies (population sigma, as ``np.std``) and take its
    (1 - p) quantile mu + z_{1-p} sigma, so a clean model lands above the line with
    probability p under that fit. WRT scans a grid of counts for the quantile; the closed form
    is the same number without the grid's step. Clipped to [0, 1].

    Degenerate case (sigma 0: every null model scored the same, typically 0 for a key label
    no clean model answers): WRT warns and ends at a threshold of 0, so one chance match
    would call a clean model marked. Here the rate behind the observations is bounded from
    above (Wilson, z 3, over all ``len(key_accs) * key_size`` queries) and the threshold is
    the (1 - p) quantile of a key of ``key_size`` samples at that rate: the most matches a
    clean model plausibly scores by chance. Without ``key_size`` it is the observed value.
    """
    values = [float(v) for v in key_accs]
    if not values:
        raise ValueError("a decision threshold needs at least one null key accuracy")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    mean = sum(values) / len(values)
    sigma = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    if sigma > 1e-12:
        return min(1.0, max(0.0, mean + NormalDist().inv_cdf(1.0 - p) * sigma))
    if not key_size:
        return min(1.0, max(0.0, mean))
    queries = len(values) * key_size
    rate = rate_upper_bound(round(mean * queries), queries)
    return binomial_quantile(key_size, rate, 1.0 - p) / key_size


def binomial_quantile(n: int, rate: float, level: float) -> int:
    """The smallest k with P[X <= k] >= ``level`` for X ~ Binomial(n, rate)."""
    for k in range(n + 1):
        if k == n or binomial_tail(k + 1, n, rate) <= 1.0 - level:
            return k
    return n
