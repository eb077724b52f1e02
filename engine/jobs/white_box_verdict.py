"""The referee's verdict on a white-box watermark: the bit error rate read from the weights
before and after an attack, and whether the attack removed the mark.

A white-box key (``Watermark.white_box``: ``uchida``, and any scheme that verifies from the
weights) has no retention probe: its mark is in no answer of the model, so the referee's
accuracy scores say nothing about it and the SoK's threshold on key accuracy does not apply.
The referee reads it instead with the scheme's own verifier, as ``wmtui verify --white-box``
does, and keeps ``ber``, ``bits`` and ``p_value`` beside the accuracies (``scores["white_box"]``
per key folder).

"Removed" for such a key is the SoK's rule with the scheme's own test in place of the
threshold (Lukas et al., S&P 2022, Section IV; the SoK reads a white-box mark by its verifier
too): the mark is gone when the owner's key is no longer verified (the p-value of the BER
under random weights is not below :data:`ALPHA`, the significance ``wmtui verify`` uses), and
the attack counts only if the model stayed useful (test accuracy at most 5 points below the
unmarked model's). The unmarked accuracy is the one the user gives (``--reference-acc``);
without it, the suspect's own accuracy before the attack stands in for it, since no null
models are trained for a white-box key (the mark costs about a point: see the white-box
watermarks page), and ``reference_source`` says which was used.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from engine.data.base import ImageSet
from engine.errors import ConfigError, RunError
from engine.watermarks import Key, get_scheme, load_key
from engine.watermarks.white_box import is_white_box

#: the significance a white-box mark is verified at (``wmtui verify``'s default)
ALPHA = 1e-3
#: the key folder whose verdict decides "removed" (the owner's original key)
PRIMARY = "key"


@dataclasses.dataclass(frozen=True)
class WeightMark:
    """An owner's white-box key, read from a model's weights by its scheme's verifier;
    ``data`` is what a scheme that reads activations of key inputs needs."""

    name: str
    key: Key
    data: ImageSet

    def score(self, model: nn.Module) -> dict[str, Any]:
        """BER, bits and p-value of the mark in ``model``. A model the key cannot be read
        from (another architecture, fewer layers: a distilled copy) has lost the mark, said
        in ``unreadable`` rather than failing the attack job after its work is done."""
        try:
            verdict = get_scheme(self.key.scheme).verify(
                model, self.key, self.data, ALPHA, test_acc=False
            )
        except (RunError, ConfigError) as exc:
            unread = {"ber": None, "bits": None, "p_value": None, "verified": False}
            return unread | {"unreadable": str(exc)}
        return {
            "ber": verdict.ber,
            "bits": verdict.n_key,
            "p_value": verdict.p_value,
            "log10_p_value": verdict.log10_p_value,
            "verified": verdict.verified,
            "alpha": ALPHA,
        }


def weight_marks(folders: Iterable[Path], data: ImageSet) -> list[WeightMark]:
    """The white-box keys among ``folders`` (the owner's key folders); black-box ones are
    the retention probes' business."""
    marks = []
    for folder in folders:
        key = load_key(folder)
        if is_white_box(get_scheme(key.scheme)):
            marks.append(WeightMark(folder.name, key, data))
    return marks


def mark_scores(model: nn.Module, marks: Iterable[WeightMark]) -> dict[str, dict[str, Any]]:
    """``{key folder: {ber, bits, p_value, verified...}}`` of ``model``."""
    return {mark.name: mark.score(model) for mark in marks}


def primary_mark(scores: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The owner's original white-box key's reading in the referee's ``scores``, if any."""
    marks = scores.get("white_box") or {}
    return marks.get(PRIMARY) or next(iter(marks.values()), None)


def describe_marks(scores: Mapping[str, Any]) -> list[str]:
    """``key BER 0.46 of 100 bits (p 0.24)`` per white-box key, for the job's log lines."""
    parts = []
    for name, mark in (scores.get("white_box") or {}).items():
        if mark.get("ber") is None:
            parts.append(f"{name} unreadable")
        else:
            bits, p = mark["bits"], mark["p_value"]
            parts.append(f"{name} BER {mark['ber']:.2f} of {bits} bits (p {p:.2g})")
    return parts


@dataclasses.dataclass(frozen=True)
class WhiteBoxJudge:
    """The removal verdict on a white-box key (see the module): the same keys in the summary
    as the SoK judge's, plus ``ber``, ``bits``, ``p_value`` and ``rule``."""

    reference_test_acc: float | None
    reference_source: str
    #: the SoK's utility margin (``engine.jobs.success.MARGIN``)
    margin: float
    threshold: float | None = None  # no threshold on key accuracy for a white-box key

    @classmethod
    def for_suspect(
        cls, reference_acc: float | None, before: Mapping[str, Any], margin: float
    ) -> WhiteBoxJudge:
        if reference_acc is not None:
            return cls(reference_acc, "given", margin)
        value = before.get("test_acc")
        known = isinstance(value, int | float)
        return cls(float(value) if known else None, "before the attack" if known else "", margin)

    def judge(self, scores: Mapping[str, Any]) -> dict[str, Any]:
        kept = float(scores.get("test_acc") or 0.0)
        mark = primary_mark(scores) or {}
        ber, ref = mark.get("ber"), self.reference_test_acc
        verdict: dict[str, Any] = {
            "kept_accuracy": kept,
            # the share of bits read right: what "key accuracy" means for a bit signature
            "wm_accuracy": None if ber is None else 1.0 - float(ber),
            "threshold": None,
            "reference_test_acc": ref,
            "ber": ber,
            "bits": mark.get("bits"),
            "p_value": mark.get("p_value"),
            "rule": "white-box",
        }
        if not mark:
            return verdict | {"removed": None, "why": "no white-box key was read"}
        if ref is None:
            return verdict | {
                "removed": None,
                "why": "no unmarked accuracy (give --reference-acc)",
            }
        gone = not mark.get("verified")
        useful = kept >= ref - self.margin - 1e-12
        if ber is None:
            read = f"mark unreadable ({mark.get('unreadable', '')})"
        else:
            shown = f"{mark['p_value']:.2g}"
            read = (
                f"BER {ber:.2f} of {mark['bits']} bits, p {shown} "
                f"{'>=' if gone else '<'} alpha {ALPHA:g}"
            )
        where = "the model before the attack" if self.reference_source != "given" else ""
        why = (
            f"{read}, test acc {kept:.1%} {'within' if useful else 'more than'} "
            f"{self.margin * 100:g} points {'of' if useful else 'below'} {ref:.1%}"
            + (f" ({where})" if where else "")
        )
        return verdict | {"removed": useful and gone, "why": why}
