"""Which removal rule judges an attacked run: the SoK's threshold on key accuracy for a key
the referee probes, the scheme's own verdict on the bit error rate for a white-box key.

Apart from both rules so that neither module imports the other's (the SoK rule looks up the
owner's run through the referee, which reads white-box keys)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from engine.jobs.success import MARGIN, SoKJudge
from engine.jobs.white_box_verdict import PRIMARY, WeightMark, WhiteBoxJudge


def removal_judge(
    run_dir: Path,
    names: tuple[str, str],
    before: Mapping[str, Any],
    marks: Iterable[WeightMark],
    threshold: float | None,
    reference_acc: float | None,
) -> SoKJudge | WhiteBoxJudge:
    """The judge of the attack on ``run_dir``'s model; ``names``: its dataset and
    architecture; ``before``: the referee's scores of the suspect before the attack."""
    if any(mark.name == PRIMARY for mark in marks):
        return WhiteBoxJudge.for_suspect(reference_acc, before, MARGIN)
    dataset, arch = names
    return SoKJudge.for_run(
        run_dir, dataset, arch, threshold=threshold, reference_acc=reference_acc
    )
