"""When a trigger-reversal scan may stop: once its triggers stop shrinking, or at a cap.

A fixed number of steps is either wasted (a model whose triggers settled early) or too few
(a decoy-trained model whose target trigger only collapses after 1,000 steps: issue 27 saw
Neural Cleanse miss a trigger at 300 steps and find it at 1,500). Neural Cleanse's own code
stops a class once its best mask has not improved for a patience of steps; this is that rule
for all stacked slots together: the scan stops when, over a whole ``window`` of steps, no
slot's best value improved by more than ``tol`` (relative), and never later than ``cap``.

:class:`Convergence` is fed the per-slot values every step (lower is better: a mask's L1
norm, or a search loss) and keeps the per-slot minimum on the device; it reads the result
back once a window, so a GPU scan pays one host sync per window, not per step. The reason
it stopped is what a detection's summary reports (``stopped_because``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from engine.attacks.detection import Detection, ReversedTrigger
from engine.metrics import gap_ratio
from engine.registry import param


@dataclasses.dataclass(frozen=True)
class ConvergeParams:
    """The stop rule's settings (any scan that stops by :class:`Convergence`)."""

    converge_window: int = param(
        100, "stop once no trigger shrank by --converge-tol within this many steps", low=1
    )
    converge_tol: float = param(
        0.01, "relative shrink that still counts as progress", low=0.0, high=1.0
    )


@dataclasses.dataclass
class ConvergedDetection(Detection):
    """A detection from a scan that stops by :class:`Convergence`: the summary says why."""

    stopped_because: str = ""
    cap: int = 0


def converged_detection(
    method: str,
    sizes: list[float],
    size_kind: str,
    decision: tuple[int | None, float, list[float]],
    success: list[float],
    params: Any,
    *,
    steps: int,
    started: float,
    trigger: ReversedTrigger | None,
    stopped_because: str,
    threshold: float | None = None,
) -> ConvergedDetection:
    """A converged scan's result, the same for every detector: the decision rule's verdict
    (``decision``: flagged class, anomaly index, indices), ``params``' rule, gap and cap, the
    time since ``started`` (``time.perf_counter``) and why the scan stopped."""
    flagged, index, indices = decision
    return ConvergedDetection(
        method=method,
        sizes=sizes,
        size_kind=size_kind,
        flagged_class=flagged,
        anomaly_index=index,
        anomaly_indices=indices,
        success=success,
        rule=params.rule,
        threshold=threshold,
        gap=params.gap,
        gap_ratio=gap_ratio(sizes),
        steps=steps,
        seconds=round(time.perf_counter() - started, 3),
        trigger=trigger,
        stopped_because=stopped_because,
        cap=params.scan_steps,
    )


class Convergence:
    """Stop rule for S stacked slots: converged once a ``window`` of steps passed, after
    ``min_steps``, in which no slot's best value fell by more than ``tol`` of its size
    (relative to ``max(|best|, floor)``, so losses near or below 0 are judged too)."""

    def __init__(
        self,
        cap: int,
        *,
        window: int = 100,
        tol: float = 0.01,
        min_steps: int = 0,
        floor: float = 1e-3,
    ) -> None:
        if cap < 1 or window < 1:
            raise ValueError("cap and window must be at least 1")
        self.cap, self.window, self.tol = cap, window, tol
        self.min_steps, self.floor = min_steps, floor
        self.best: torch.Tensor | None = None
        self.mark: torch.Tensor | None = None  # the best values at the last window boundary
        self.stopped_at: int | None = None

    @torch.no_grad()
    def update(self, step: int, values: torch.Tensor) -> bool:
        """Record step ``step``'s per-slot values; True when the scan should stop now."""
        values = values.detach().float()
        self.best = values.clone() if self.best is None else torch.minimum(self.best, values)
        done = step + 1
        if done >= self.cap:
            self.stopped_at = done
            return True
        if done % self.window:
            return False
        if self.mark is None or done < self.min_steps + self.window:
            self.mark = self.best.clone()
            return False
        scale = self.mark.abs().clamp_min(self.floor)
        improved = bool(((self.mark - self.best) > self.tol * scale).any())  # one sync
        self.mark = self.best.clone()
        if improved:
            return False
        self.stopped_at = done
        return True

    @property
    def converged(self) -> bool:
        return self.stopped_at is not None and self.stopped_at < self.cap

    def reason(self) -> str:
        """What the summary says: converged at step N, or the cap reached."""
        if self.stopped_at is None:
            return "not run"
        if self.converged:
            return (
                f"converged at step {self.stopped_at}: no trigger shrank by more than "
                f"{self.tol:.0%} in {self.window} steps"
            )
        return f"cap reached ({self.cap} steps) before the triggers settled"
