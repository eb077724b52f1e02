"""Two attacks of one kind side by side, folded from the event stream: two piracy attacks (Li
et al., Fig. 4), or two extraction attacks (the SoK's retraining of a pattern model beside
an entangled one: which watermark the stolen model keeps).

An attack's job phase starts with ``info["attack"]``: ``piracy``, or an attack of the
extraction family (``engine.attacks.ATTACKS``). Its Metrics carry the attacked (or stolen)
model's test accuracy and the owner's marks (``key``, or ``key null`` and ``key true``); a
piracy's also the pirate's (``pirate``, or ``pirate null`` and ``pirate true``). Each attack
keeps its lines over its own steps (each from 0): test accuracy (NC), the owner's mark and,
for piracy, the pirate's; a dual mark as min(null, true), the paper's WM. A piracy goes on
from the attacked model, so its lines start at that model's numbers; a stolen model is a
fresh one, so its lines start at its first evaluation. Once a second attack of the same kind
runs after an earlier one, the two are compared. Another job that plots (training, a scan, an
attack that trains) ends the comparison; an attack that plans no steps (serving the model
behind a filter or a transform) leaves it on screen, since it has no plot of its own. A third
attack of the kind brings it back, beside the one before it. No Textual here.
"""

from __future__ import annotations

import dataclasses
from pathlib import PurePath

from engine.attacks import ATTACKS, EXTRACTION
from engine.errors import UserError
from engine.events import Metrics, Phase
from wmtui.tui.series import Series

PIRACY = "piracy"
#: the pirate's probes are named from this (engine/jobs/piracy.py: ``scheme.probes(key, own,
#: "pirate")``): "pirate", or "pirate null" and "pirate true"
PIRATE = "pirate"


def compared_kind(attack: object) -> str:
    """What an attack is compared as: ``piracy``, ``extraction`` (any attack of that family),
    or "" (not compared; also an attack this installation does not know, in a recording)."""
    if not isinstance(attack, str) or not attack:
        return ""
    if attack == PIRACY:
        return PIRACY
    try:
        family = ATTACKS.get(attack).family
    except UserError:
        return ""
    return EXTRACTION if family == EXTRACTION else ""


@dataclasses.dataclass
class ComparedRun:
    """One compared attack: its lines in percent, x the step within the attack."""

    name: str  # the scenario phase ("pirate", "steal-ewe") or the job phase ("piracy")
    kind: str = PIRACY  # piracy or extraction
    phase: str = PIRACY  # the job phase its readings carry: the attack's name
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
class ComparisonView:
    runs: list[ComparedRun] = dataclasses.field(default_factory=list)  # the last two
    active: bool = False  # a compared attack is running: its Metrics are its points
    shown: bool = False  # two runs, and no other plotting job started since the latest began
    #: what this session embedded, by run folder: the scheme (from the embed job's start)
    #: and its final retention (from its end), for the owner's mark at a piracy's step 0
    schemes: dict[str, str] = dataclasses.field(default_factory=dict)
    finals: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)
    job_run: str = ""  # the run folder of the job running now

    @property
    def kind(self) -> str:
        """What the shown attacks are (piracy, extraction); "" when none is."""
        return self.runs[-1].kind if self.shown else ""

    def phase(self, event: Phase, scenario_phase: str) -> None:
        """A job's phase (not a scenario's own marker)."""
        info = event.info
        if event.status != "start":
            retention = info.get("retention")
            if self.job_run and isinstance(retention, dict):
                numbers = {k: v for k, v in retention.items() if isinstance(v, int | float)}
                self.finals[self.job_run] = {str(k): float(v) for k, v in numbers.items()}
            if self.active and event.name == self.runs[-1].phase:
                self.active = False
            return
        self.job_run = str(info.get("run", ""))
        kind = compared_kind(info.get("attack"))
        if not kind:
            plots = "attack" not in info or bool(info.get("steps"))  # a filter's plots nothing
            self.shown = self.shown and not plots
            self.active = False
            if self.job_run and isinstance(info.get("scheme"), str):
                self.schemes[self.job_run] = str(info["scheme"])
            return
        source = str(info.get("source_run", ""))
        steps = int(info.get("steps", 0) or 0)
        name = scenario_phase or event.name
        run = ComparedRun(name, kind, event.name, self.schemes.get(source, ""), source, steps)
        if kind == PIRACY:  # the pirate goes on from the attacked model: its numbers first
            test_acc = info.get("test_acc")
            if isinstance(test_acc, int | float):  # the attacked model's recorded accuracy
                run.nc.add(0, 100 * test_acc)
            owner = self.finals.get(source, {})
            if owner:
                run.owner.add(0, 100 * min(owner.values()))
        same = bool(self.runs) and self.runs[-1].kind == kind
        self.runs = [*self.runs[-1:], run] if same else [run]
        self.active, self.shown = True, len(self.runs) == 2

    def metrics(self, event: Metrics) -> None:
        if not self.active or event.phase != self.runs[-1].phase:
            return
        run = self.runs[-1]
        if event.test_acc is not None:
            run.nc.add(event.step, 100 * event.test_acc)
        piracy = run.kind == PIRACY
        owner = {k: v for k, v in event.retention.items() if not (piracy and _pirate(k))}
        pirate = {k: v for k, v in event.retention.items() if piracy and _pirate(k)}
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

    def heading(self) -> str:
        """What is compared: ``piracy``, the one extraction attack both ran (``retraining``),
        else ``extraction``."""
        left, right = self.runs[0], self.runs[-1]
        if left.kind == PIRACY or left.phase != right.phase:
            return left.kind
        return left.phase


def _pirate(probe: str) -> bool:
    return probe.startswith(PIRATE)
