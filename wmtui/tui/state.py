"""What the dashboard shows, folded from the event stream; no Textual here.

Keeping this pure lets the same fold serve the live app, replay and tests, and keeps the
UI thread's work per repaint proportional to the new events only.
"""

from __future__ import annotations

import dataclasses

import torch

from engine.events import (
    Checkpoint,
    ClassScan,
    Discrepancy,
    Done,
    Error,
    Event,
    Log,
    Metrics,
    Phase,
    TriggerPreview,
)
from engine.jobs.success import yes_no
from engine.metrics import mad_flag_line, percent
from engine.progress import LEVEL as PROGRESS
from wmtui.tui.comparison_state import ComparisonView
from wmtui.tui.series import Series

#: img/s is averaged over about this many seconds (half-life), weighted by each reading's
#: interval: single readings jump (174 -> 10,948 -> 323 within a minute on a busy CPU)
RATE_HALF_LIFE = 10.0
#: the weight of a phase's first reading, which has no interval of its own: the next real
#: one all but replaces it (a first step's warm-up is not the phase's speed)
FIRST_READING_SECONDS = 1e-3
#: the phase in which the ``datafree`` scheme distils its teacher (Discrepancy events)
DISTILL_PHASE = "distill"
#: what the status line reads of a phase; kept while a follow-up (``a``/``d`` mid-phase)
#: runs inside it, and put back when the phase goes on
PHASE_VIEW = (
    "phase",
    "info",
    "total_steps",
    "step",
    "epoch",
    "lr",
    "loss",
    "test_acc",
    "images_per_s",
    "queries",
    "query_cap",
    "rate_images",
    "rate_seconds",
    "rate_time",
    "x_offset",
)


@dataclasses.dataclass
class DashboardState:
    status: str = "starting"
    phase: str = ""
    step: int = 0
    total_steps: int = 0
    epoch: float = 0.0
    lr: float | None = None
    loss: float | None = None
    test_acc: float | None = None
    images_per_s: float = 0.0  # smoothed (see RATE_HALF_LIFE); 0 until the phase's first reading
    #: an attack's answers from the suspect so far (its readings') and its budget's cap (0:
    #: none); None until a reading carries a count
    queries: int | None = None
    query_cap: int = 0
    #: the rate average's sums: images (rate x seconds) and seconds, both decayed; the time
    #: of the last reading (or of the phase start)
    rate_images: float = 0.0
    rate_seconds: float = 0.0
    rate_time: float | None = None
    info: dict[str, object] = dataclasses.field(default_factory=dict)
    loss_series: Series = dataclasses.field(default_factory=Series)
    acc_series: Series = dataclasses.field(default_factory=Series)
    retention: dict[str, Series] = dataclasses.field(default_factory=dict)
    phase_starts: list[int] = dataclasses.field(default_factory=list)
    x_offset: int = 0  # plots share one x axis across phases: phase steps start here
    last_x: int = 0
    pending_log: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    summary: dict[str, object] = dataclasses.field(default_factory=dict)
    scan_sizes: dict[int, float] = dataclasses.field(default_factory=dict)
    scan_done: set[int] = dataclasses.field(default_factory=set)
    scan_threshold: float | None = None
    scan_gap: float = 1.0  # the MAD rule's gap: the next class must be this many times larger
    scan_name: str = ""
    #: the search's progress: all classes are searched together, so steps, not classes, tell
    #: how far it is; the ETA is from the rate so far (event times: replay gets the same)
    scan_step: int = 0
    scan_steps: int = 0
    scan_started: float = 0.0
    scan_eta: float | None = None
    #: the scan before this one, kept so two models' scans can be compared side by side
    previous_scan: dict[int, float] = dataclasses.field(default_factory=dict)
    previous_scan_name: str = ""
    flagged_class: int | None = None
    scan_verdict: bool = False  # True once the engine has decided (flagged_class may be None)
    previews: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    #: the data-free distillation (``datafree``): the teacher-student discrepancy per epoch,
    #: its second difference (from the third epoch), the latest threshold Delta0/10 (Delta0
    #: may grow until epoch t0), and the epoch the truncation rule stopped at. Kept through
    #: the injection that follows; ``disc_stale`` once a later phase has ended, so that the
    #: next phase start forgets it
    discrepancy: Series = dataclasses.field(default_factory=Series)
    second_diff: Series = dataclasses.field(default_factory=Series)
    disc_threshold: float | None = None
    truncated_at: int | None = None
    disc_epoch: int = 0
    disc_epochs: int = 0
    disc_phase: str = ""
    disc_stale: bool = False
    scenario: str = ""
    scenario_phase: str = ""
    phase_index: int = 0
    phase_total: int = 0
    phase_title: str = ""
    phase_results: list[dict[str, object]] = dataclasses.field(default_factory=list)
    #: the piracy or extraction attacks of this session, two of a kind side by side
    comparison: ComparisonView = dataclasses.field(default_factory=ComparisonView)
    #: whether a (job) phase has started and not ended, and the views of the phases a
    #: follow-up interrupted, innermost last
    #: the running phase's folder (a scenario's NN-name, or a job's run): where a screenshot
    #: of it belongs
    phase_run: str = ""
    #: what the worker does between readings (rendering data, verifying keys) and how far it
    #: is: shown in the status line until the next reading
    activity: str = ""
    phase_open: bool = False
    outer: list[dict[str, object]] = dataclasses.field(default_factory=list)
    version: int = 0  # bumped on every change, so widgets repaint only when needed

    def apply(self, event: Event) -> None:
        self.version += 1
        if not isinstance(event, Log):
            self.activity = ""  # a reading, a phase, an end: the wait is over
        if isinstance(event, Metrics):
            self._metrics(event)
        elif isinstance(event, Phase):
            self._phase(event)
        elif isinstance(event, Log) and event.level == PROGRESS:
            self.activity = event.message  # the status line's, until the next reading
        elif isinstance(event, Log):
            prefix = {"warning": "! ", "error": "x "}.get(event.level, "")
            self.log(f"{prefix}{event.message}")
            if event.message == "paused":
                self.status = "paused"
            elif event.message == "resumed":
                self.status = "running"
        elif isinstance(event, ClassScan):
            self._class_scan(event)
        elif isinstance(event, Discrepancy):
            self._discrepancy(event)
        elif isinstance(event, TriggerPreview):
            self.previews[event.name] = event.to_tensor()
        elif isinstance(event, Checkpoint):
            pass  # acknowledged through a Log line
        elif isinstance(event, Error):
            first = event.message.splitlines()[0] if event.message else "error"
            self.error = first
            self.log(f"x error: {first}")
        elif isinstance(event, Done):
            self.status = (
                event.status if not (self.error and event.status == "failed") else "failed"
            )
            self.summary = dict(event.summary)
            self.outer, self.phase_open = [], False
            # the next session's first phase is not this one's injection
            self.disc_stale = bool(self.discrepancy.x)
            self.log(f"session {event.status}")

    def _resume_outer(self, phase: str) -> None:
        """An event of the interrupted phase: the follow-up is over, so the status line reads
        the interrupted phase again. Its own events tell, not the follow-up's end: one ended
        early may send none, and a recording may hold a phase that never ended."""
        if self.outer and self.outer[-1]["phase"] == phase and self.phase != phase:
            for name, value in self.outer.pop().items():
                setattr(self, name, value)

    def _metrics(self, event: Metrics) -> None:
        self._resume_outer(event.phase)
        if self.status in {"starting", "stopping"}:
            self.status = "running"
        self.phase, self.step, self.epoch = event.phase, event.step, event.epoch
        self.lr, self.loss = event.lr, event.loss
        if event.queries is not None:
            self.queries = event.queries
        self._smooth_rate(event)
        x = self.x_offset + event.step
        self.last_x = x
        self.loss_series.add(x, event.loss)
        if event.test_acc is not None:
            self.test_acc = event.test_acc
            self.acc_series.add(x, 100 * event.test_acc)
        for name, value in event.retention.items():
            self.retention.setdefault(name, Series()).add(x, 100 * value)
        self.comparison.metrics(event)

    def _smooth_rate(self, event: Metrics) -> None:
        """img/s as an exponentially weighted average of the readings, each weighted by the
        seconds since the one before: a reading over a short burst counts for little."""
        if self.rate_time is None or self.rate_seconds == 0.0:
            interval = FIRST_READING_SECONDS
        else:
            # scripted events carry no times: then every reading weighs one second
            interval = event.time - self.rate_time if event.time > self.rate_time else 1.0
        self.rate_time = event.time
        decay = 0.5 ** (interval / RATE_HALF_LIFE)
        self.rate_images = decay * self.rate_images + event.images_per_s * interval
        self.rate_seconds = decay * self.rate_seconds + interval
        self.images_per_s = self.rate_images / self.rate_seconds

    def _class_scan(self, event: ClassScan) -> None:
        self._resume_outer(event.phase)
        if event.phase != self.phase:
            self.phase = event.phase
        self.scan_sizes[event.cls] = event.size
        if event.done:
            self.scan_done.add(event.cls)
        if event.steps <= 0 or event.step <= self.scan_step:
            return  # a recording from before steps were sent, or the same report's next class
        self.scan_step, self.scan_steps = event.step, event.steps
        elapsed = event.time - self.scan_started
        self.scan_eta = (event.steps - event.step) * elapsed / event.step if elapsed > 0 else None

    def _discrepancy(self, event: Discrepancy) -> None:
        if self.status in {"starting", "stopping"}:
            self.status = "running"
        self.phase = event.phase
        if self.discrepancy.x and (
            event.phase != self.disc_phase or event.epoch <= self.disc_epoch or self.disc_stale
        ):
            self.reset_discrepancy()  # another distillation, recorded without its phase start
        self.disc_phase, self.disc_epoch, self.disc_epochs = event.phase, event.epoch, event.epochs
        self.discrepancy.add(event.epoch, event.value)
        if event.second_diff is not None:
            self.second_diff.add(event.epoch, event.second_diff)
        if event.threshold is not None:
            self.disc_threshold = event.threshold
        if event.truncated:
            self.truncated_at = event.epoch

    def reset_discrepancy(self) -> None:
        """Forget the distillation: the loss plot takes the discrepancy plot's place again."""
        self.discrepancy, self.second_diff = Series(), Series()
        self.disc_threshold = self.truncated_at = None
        self.disc_epoch = self.disc_epochs = 0
        self.disc_phase, self.disc_stale = "", False

    def _end_nested(self, name: str) -> None:
        """A phase's end: the end of a phase a follow-up interrupted puts its view back (its
        last numbers, not the follow-up's, are what it ended with)."""
        self._resume_outer(name)
        self.phase_open = bool(self.outer)

    def _scenario_phase(self, event: Phase) -> None:
        """A scenario's own phase marker: the header's "phase i/n", not a plot segment."""
        self.outer, self.phase_open = [], False  # another job: nothing of the last is open
        info = event.info
        self.scenario = str(info.get("scenario", ""))
        self.phase_index, self.phase_total = event.index, event.total
        if event.status == "start":
            self.reset_discrepancy()  # another scenario phase: another model, another job
            self.phase_run = str(info.get("run", "") or self.phase_run)
            self.scenario_phase = event.name
            self.phase_title = str(info.get("title", event.name))
            self.log(f"== phase {event.index}/{event.total}: {self.phase_title}")
            return
        self.phase_results.append(dict(info))
        # the results whole at 80 columns: the status only when it is not "completed"
        status = str(info.get("status", ""))
        how = f" {status}" if status and status != "completed" else ""
        result = phase_result(info) or ("ended" if not how else "")
        self.log(f"== {event.index}/{event.total} {event.name}{how}: {result}".rstrip(": "))

    def _phase(self, event: Phase) -> None:
        if "scenario" in event.info:
            self._scenario_phase(event)
            return
        self.comparison.phase(event, self.scenario_phase)
        if (
            event.status == "start"
            and self.phase_open
            and not event.name.startswith(f"{self.phase}-")
        ):  # a follow-up inside this phase (a scan's own removal, "gan-remove", is not one)
            self.outer.append({name: getattr(self, name) for name in PHASE_VIEW})
        if event.status != "start":
            self._end_nested(event.name)
        if event.status == "start":
            self.phase_open = True
            # a new distillation (or a distill attack, which sends no discrepancy), or the
            # first phase after the data-free job ended: its discrepancy is not this phase's
            if event.name == DISTILL_PHASE or self.disc_stale:
                self.reset_discrepancy()
            self.phase = event.name
            self.info = dict(event.info)
            if not self.scenario_phase and event.info.get("run"):
                self.phase_run = str(event.info["run"])
            self.total_steps = int(event.info.get("steps", 0) or 0)
            self.queries, self.query_cap = None, int(event.info.get("query_cap", 0) or 0)
            self.x_offset = self.last_x
            self.step = 0
            # a phase works on its own model: the last one's accuracy is not this one's (a
            # scan of the clean model showed the watermarked model's); attacks and scans
            # name their model's recorded accuracy, training measures its own
            self.test_acc = _float_or_none(event.info.get("test_acc"))
            self.images_per_s, self.rate_images, self.rate_seconds = 0.0, 0.0, 0.0
            self.rate_time = event.time
            self.phase_starts.append(self.x_offset)
            self.status = "running"
            if "detector" in event.info or "threshold" in event.info:
                self.reset_discrepancy()  # a scan (also one mid-injection) shows its bars
                if self.scan_sizes:
                    self.previous_scan = dict(self.scan_sizes)
                    self.previous_scan_name = self.scan_name
                self.scan_name = self.scenario_phase or event.name
                self.scan_sizes, self.scan_done, self.flagged_class = {}, set(), None
                self.scan_verdict = False
                self.scan_threshold = _float_or_none(event.info.get("threshold"))
                self.scan_step, self.scan_steps = 0, self.total_steps
                self.scan_started, self.scan_eta = event.time, None
                self.scan_gap = _float_or_none(event.info.get("gap")) or 1.0
            self.log(f"phase {event.name} started")
        else:
            if self.discrepancy.x and event.name != self.disc_phase:
                self.disc_stale = True  # the injection (or the job around it) has ended
            if "flagged_class" in event.info:
                flagged = event.info.get("flagged_class")
                self.flagged_class = int(flagged) if isinstance(flagged, int) else None
                self.scan_verdict = True
                verdict = "none" if self.flagged_class is None else str(self.flagged_class)
                self.log(f"flagged class: {verdict}")
            if removal := removal_line(event.info):
                self.log(removal)
            self.log(f"phase {event.name} ended")

    @property
    def x_upper(self) -> int:
        """Right end of the shared x axis: the end of the current phase as planned."""
        return max(self.x_offset + self.total_steps, self.last_x, 1)

    def flag_line(self) -> float | None:
        """Where a bar must fall to be flagged by the MAD rule, from the sizes so far."""
        return mad_flag_line(list(self.scan_sizes.values()), gap=self.scan_gap)

    def scan_outlier(self) -> int | None:
        """The engine's verdict once given; while scanning, the current smallest class."""
        if self.scan_verdict or not self.scan_sizes:
            return self.flagged_class
        return min(self.scan_sizes, key=self.scan_sizes.__getitem__)

    def log(self, line: str) -> None:
        self.pending_log.append(line)

    def take_log(self) -> list[str]:
        lines, self.pending_log = self.pending_log, []
        return lines


def phase_result(info: dict[str, object]) -> str:
    """A scenario phase's headline numbers for people, short enough to stay whole in an
    80-column log: "flagged class 7 · acc 88.79% (was 89.03%) · key 0.65% (was 99.90%)"
    (test accuracy, then each key set's retention, every rate in percent)."""
    parts = []
    if "flagged_class" in info:
        flagged = info["flagged_class"]
        parts.append(f"flagged class {'none' if flagged is None else flagged}")
    if "test_acc" in info:
        parts.append(f"acc {_rate(info['test_acc'])}{_was(info.get('test_acc_before'))}")
    retention, before = info.get("retention"), info.get("retention_before")
    if isinstance(retention, dict):
        was = before if isinstance(before, dict) else {}
        parts += [f"{k} {_rate(v)}{_was(was.get(k))}" for k, v in retention.items()]
    if "removed" in info:  # an attack's SoK verdict
        parts.append(f"removed {verdict_word(info['removed'])}")
    return " · ".join(parts)


def verdict_word(removed: object) -> str:
    return yes_no(removed if isinstance(removed, bool) else None)


def removal_line(info: dict[str, object]) -> str:
    """An attack phase's end: the SoK verdict and the numbers it rests on, in 80 columns:
    "removed: no · kept acc 91.20% · key 98.10% vs threshold 12.00%"."""
    if "removed" not in info:
        return ""
    parts = [f"removed: {verdict_word(info['removed'])}"]
    parts.append(f"kept acc {_rate(info.get('kept_accuracy'))}")
    parts.append(
        f"key {_rate(info.get('wm_accuracy'))} vs threshold {_rate(info.get('threshold'))}"
    )
    return " · ".join(parts)


def _rate(value: object) -> str:
    return percent(value) if isinstance(value, int | float) else "-"


def _was(value: object) -> str:
    return f" (was {percent(value)})" if isinstance(value, int | float) else ""


def _float_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None
