"""Two piracy attacks side by side (Li et al., Fig. 4), folded from the event stream.

A ``piracy`` attack (engine/jobs/piracy.py) starts its job phase with ``info["attack"] ==
"piracy"``; its Metrics carry test accuracy, the owner's marks (``key``, or ``key null`` and
``key true``) and the pirate's (``pirate``, or ``pirate null`` and ``pirate true``). Each
attack keeps three lines over its own steps (each from 0): test accuracy (NC), the owner's
mark and the pirate's, a dual mark as min(null, true), the paper's WM. Once a second piracy
runs after an earlier one, the two are compared; another job's start ends the comparison (a
third piracy brings it back, beside the one before it). No Textual here.
"""

from __future__ import annotations

import dataclasses
from pathlib import PurePath

from engine.events import Metrics, Phase
from wmtui.tui.series import Series

PIRACY_ATTACK = "piracy"
#: the pirate's probes are named from this (engine/jobs/piracy.py: ``scheme.probes(key, own,
#: "pirate")``): "pirate", or "pirate null" and "pirate true"
PIRATE = "pirate"


@dataclasses.dataclass
class PiracyRun:
    """One piracy attack: its three lines in percent, x the step within the attack."""

    name: str  # the scenario phase ("pirate", "pirate-square") or the job phase ("piracy")
    scheme: str = ""  # the attacked model's scheme ("dual", "pattern"), when the session said
    source: str = ""  # the attacked model's run folder
    steps: int = 0  # as planned
    nc: Series = dataclasses.field(default_factory=Series)
    owner: Series = dataclasses.field(default_factory=Series)
    pirate: Series = dataclasses.field(default_factory=Series)

    @property
    def label(self) -> str:
        """What the attacked model is: its scheme when this session embedded it, else its
        run folder's name (``wmtui attack piracy --run runs/dual``), else the phase's name."""
        return self.scheme or PurePath(self.source).name or self.name

    @property
    def last_step(self) -> float:
        return max((s.x[-1] for s in (self.nc, self.owner, self.pirate) if s.x), default=0.0)


@dataclasses.dataclass
class PiracyView:
    runs: list[PiracyRun] = dataclasses.field(default_factory=list)  # the last two
    active: bool = False  # a piracy job is running: its Metrics are its points
    shown: bool = False  # two runs, and no other job started since the latest began
    #: what this session embedded, by run folder: the scheme (from the embed job's start)
    #: and its final retention (from its end), for the owner's mark at a piracy's step 0
    schemes: dict[str, str] = dataclasses.field(default_factory=dict)
    finals: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    job_run: str = ""  # the run folder of the job running now

    def phase(self, event: Phase, scenario_phase: str) -> None:
        """A job's phase (not a scenario's own marker)."""
        info = event.info
        if event.status != "start":
            retention = info.get("retention")
            if self.job_run and isinstance(retention, dict):
                numbers = {k: v for k, v in retention.items() if isinstance(v, int | float)}
                self.finals[self.job_run] = {str(k): float(v) for k, v in numbers.items()}
            if event.name == PIRACY_ATTACK:
                self.active = False
            return
        self.job_run = str(info.get("run", ""))
        if info.get("attack") != PIRACY_ATTACK:
            self.active = self.shown = False
            if self.job_run and isinstance(info.get("scheme"), str):
                self.schemes[self.job_run] = str(info["scheme"])
            return
        source = str(info.get("source_run", ""))
        steps = int(info.get("steps", 0) or 0)
        run = PiracyRun(scenario_phase or event.name, self.schemes.get(source, ""), source, steps)
        test_acc = info.get("test_acc")
        if isinstance(test_acc, int | float):  # the attacked model's recorded accuracy
            run.nc.add(0, 100 * test_acc)
        owner = self.finals.get(source, {})
        if owner:
            run.owner.add(0, 100 * min(owner.values()))
        self.runs = [*self.runs[-1:], run]
        self.active, self.shown = True, len(self.runs) == 2

    def metrics(self, event: Metrics) -> None:
        if not self.active or event.phase != PIRACY_ATTACK:
            return
        run = self.runs[-1]
        if event.test_acc is not None:
            run.nc.add(event.step, 100 * event.test_acc)
        owner = {k: v for k, v in event.retention.items() if not k.startswith(PIRATE)}
        pirate = {k: v for k, v in event.retention.items() if k.startswith(PIRATE)}
        if owner:
            run.owner.add(event.step, 100 * min(owner.values()))
        if pirate:
            run.pirate.add(event.step, 100 * min(pirate.values()))

    def title(self) -> tuple[str, str]:
        """The compared attacks' names, left (earlier) and right: what the attacked models
        are, or the phases' names where those are the same."""
        left, right = self.runs[0], self.runs[-1]
        if left.label != right.label:
            return left.label, right.label
        if left.name != right.name:
            return left.name, right.name
        return f"{left.label} 1", f"{right.label} 2"
