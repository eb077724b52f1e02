"""Which removal rule judges an attacked run: the SoK's threshold on key accuracy for a key
the referee probes, the scheme's own verdict on the bit error rate for a white-box key.

Apart from both rules so that neither module imports the other's (the SoK rule looks up the
owner's run through the referee, which reads white-box keys)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.jobs.success import MARGIN, SoKJudge, primary_key_accuracy
from engine.jobs.white_box_verdict import PRIMARY, WeightMark, WhiteBoxJudge


def removal_judge(
    run_dir: Path,
    names: tuple[str, str],
    before: Mapping[str, Any],
    marks: Iterable[WeightMark],
    threshold: float | None,
    reference_acc: float | None,
    *,
    extraction: bool = False,
) -> SoKJudge | WhiteBoxJudge:
    """The judge of the attack on ``run_dir``'s model; ``names``: its dataset and
    architecture; ``before``: the referee's scores of the suspect before the attack;
    ``extraction``: whether the attack (a chain: one of its steps) learns a new model from
    the suspect's answers."""
    if any(mark.name == PRIMARY for mark in marks):
        return WhiteBoxJudge.for_suspect(reference_acc, before, MARGIN)
    dataset, arch = names
    judge = SoKJudge.for_run(
        run_dir, dataset, arch, threshold=threshold, reference_acc=reference_acc
    )
    nothing = nothing_to_remove(run_dir, before, judge.threshold, extraction)
    return dataclasses.replace(judge, nothing=nothing) if nothing else judge


def nothing_to_remove(
    run_dir: Path, before: Mapping[str, Any], threshold: float | None, extraction: bool
) -> str:
    """Why the SoK's rule cannot call this attack a removal, or "".

    The rule asks whether an attack took a watermark away. Two suspects hold none to take:
    a model whose key accuracy is already at or below the threshold before the attack (the
    embedding did not take: any attack would count as a removal), and a model served behind
    DAWN's answer filter attacked by anything but extraction (DAWN marks the answers a
    thief learns from, not the owner's weights; the SoK judges it on extraction alone)."""
    from engine.jobs.referee import key_run
    from engine.runs import KEY_DIR
    from engine.watermarks import load_key
    from engine.watermarks.dawn import API

    owner = key_run(run_dir)
    if owner is None:
        return ""
    if not extraction and load_key(owner / KEY_DIR).meta.get("dawn") == API:
        return (
            "not judged: DAWN marks the API's answers, not the weights; only a model "
            "extracted from the API can carry it"
        )
    key_before = primary_key_accuracy(before.get("retention") or {})
    if threshold is not None and key_before is not None and key_before <= threshold:
        return (
            f"not judged: the key accuracy before the attack, {key_before:.1%}, is already "
            f"at or below the threshold {threshold:.1%}: the model holds no watermark to remove"
        )
    return ""
