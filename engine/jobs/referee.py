"""The engine as referee between an attacker and the owner's key.

An attack or a detector is handed the suspect model, the attacker's share of the data and an
:class:`~engine.attacks.registry.AttackEnv`. The referee's probes (the clean test set, plus
the owner's key sets) live only here: the training loop scores them every ``eval_every``
steps and streams ``Metrics``, and the job measures them before and after. The attack never
receives the key or the scores; ``engine.attacks`` never imports ``engine.watermarks``.

:func:`refereed_job` is the one skeleton of the ``attack`` and ``detect`` jobs: load the
suspect, announce the phase, do the work, and leave a summary for every outcome.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import progress
from engine.attacks.budget import AttackerBudget, AttackerData, build_attacker_data
from engine.attacks.queries import QueryCounter
from engine.attacks.registry import Attack, AttackResult, TrainReport, make_attack
from engine.data import ImageSet, default_data_dir, load_dataset, require_dataset
from engine.data.meta import DatasetMeta, dataset_meta
from engine.errors import ConfigError, RunError
from engine.events import Phase, json_safe
from engine.jobs.common import recording_outcome, resolve_device
from engine.jobs.followup import hold
from engine.jobs.spec import loose
from engine.jobs.verdicts import verdict_line
from engine.jobs.white_box_verdict import WeightMark, describe_marks, mark_scores, weight_marks
from engine.metrics import Probe, accuracy, percent
from engine.models import Architecture
from engine.runs import KEY_DIR, RunDir, load_model
from engine.session import Job, JobContext
from engine.training import OptimSettings, Source, TrainLoop, clean_test_probe
from engine.watermarks import KEY_JSON, check_key_matches, get_scheme, load_key, save_key

ProbesFor = Callable[[ImageSet, torch.device], list[Probe]]


# -- the owner's keys ------------------------------------------------------------------------
def key_folders(run_dir: str | Path) -> list[Path]:
    """``key`` first, then the keys switched to mid-run (``key-2``, ``key-3``, ...)."""
    folders = [p for p in Path(run_dir).glob("key*") if (p / KEY_JSON).is_file()]
    return sorted(folders, key=lambda p: (p.name != KEY_DIR, len(p.name), p.name))


def load_key_probes(run_dir: str | Path, data: ImageSet, device: torch.device) -> list[Probe]:
    """One retention probe per key of ``run_dir``, on held-out samples of ``data``."""
    probes = []
    for folder in key_folders(run_dir):
        key = load_key(folder)
        check_key_matches(key, data.name, data.shape, data.num_classes)
        probes.extend(get_scheme(key.scheme).probes(key, data, folder.name))
    return probes


def key_run(run_dir: Path, max_depth: int = 16) -> Path | None:
    """The run holding the owner's key: ``run_dir`` itself, else the run it was attacked from
    (an attacked run records ``source_run``), so chained attacks are still refereed."""
    path: Path | None = Path(run_dir)
    for _ in range(max_depth):
        if path is None:
            return None
        if (path / KEY_DIR).is_dir():
            return path
        try:
            source = RunDir(path).manifest().get("source_run")
        except RunError:
            return None
        path = Path(source) if source else None
    return None


def default_probes(run_dir: Path) -> ProbesFor:
    """The clean test probe, plus the owner's key probes when the run (or the run it was
    attacked from) has a key."""

    def probes_for(data: ImageSet, device: torch.device) -> list[Probe]:
        probes = [clean_test_probe(data)]
        owner = key_run(run_dir)
        return probes if owner is None else probes + load_key_probes(owner, data, device)

    return probes_for


def white_box_marks(run_dir: Path, data: ImageSet) -> list[WeightMark]:
    """The owner's white-box keys (read from the weights, not probed), of ``run_dir`` or of
    the run it was attacked from."""
    owner = key_run(run_dir)
    return [] if owner is None else weight_marks(key_folders(owner), data)


def referee_scores(
    model: nn.Module, probes: Iterable[Probe], marks: Iterable[WeightMark] = ()
) -> dict[str, Any]:
    """``{"test_acc": ..., "retention": {key probe: accuracy}}`` at full precision, and with
    white-box ``marks`` ``"white_box": {key folder: {ber, bits, p_value, verified}}``."""
    scores = {p.name: accuracy(model, p) for p in probes}
    result: dict[str, Any] = {
        "test_acc": json_safe(scores.get("test")),
        "retention": {k: json_safe(v) for k, v in scores.items() if k != "test"},
    }
    read = mark_scores(model, marks)
    return result | ({"white_box": json_safe(read)} if read else {})


def recorded_test_acc(run: RunDir) -> float | None:
    """The test accuracy ``run``'s summary recorded for its model, None when it has none:
    a phase that works on that model says so at its start (the dashboard shows the scanned
    model's accuracy, not the one trained before it), without evaluating it again."""
    try:
        value = run.summary().get("test_acc")
    except (RunError, AttributeError):  # no summary yet, or not a JSON object
        return None
    return float(value) if isinstance(value, int | float) else None


def describe_scores(scores: Mapping[str, Any]) -> str:
    parts = [f"test acc {percent(scores.get('test_acc'))}"]
    parts += [f"{k} {percent(v)}" for k, v in scores.get("retention", {}).items()]
    return ", ".join(parts + describe_marks(scores))


def referee_trainer(
    ctx: JobContext,
    phase: str,
    probes: list[Probe],
    eval_every: int,
    seed: int,
    queries: QueryCounter | None = None,
) -> Callable[..., TrainReport]:
    """``env.train``: the one loop, with the referee's probes closed over, returning no scores.

    With the attack's ``queries`` counter, every reading of the loop carries the answers the
    suspect has given so far, and answers given outside training (a transfer set labelled
    up front, which takes seconds on a large model) are said as progress: the live query
    counter of an extraction attack."""
    reporter = AnsweringReporter(ctx)
    if queries is not None:
        queries.listener = reporter

    def train(
        model: nn.Module,
        sources: list[Source],
        settings: OptimSettings,
        *,
        steps: int,
        params: Iterable[nn.Parameter] | None = None,
    ) -> TrainReport:
        loop = TrainLoop(
            model,
            sources,
            settings,
            ctx=ctx,
            phase=phase,
            total_steps=steps,
            probes=probes,
            eval_every=eval_every,
            seed=seed,
            params=params,
            queries=(lambda: queries.count) if queries is not None else None,
        )
        reporter.finish()
        reporter.training = True  # its readings carry the count: no progress lines beside them
        try:
            result = loop.run()
        finally:
            reporter.training = False
        return TrainReport(result.steps, result.loss)

    return train


class AnsweringReporter:
    """A query counter's listener: between trainings, a progress line ("the suspect
    answered 12,000 of 20,000 queries") once the answering has taken :data:`progress.AFTER`
    seconds, then at most every :data:`progress.EVERY` seconds, and the count it ended at
    (:meth:`finish`) once it has spoken; during a training nothing, since its readings carry
    the count."""

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self.training = False
        self._started: float | None = None
        self._last = -math.inf
        self._said = -1  # the count last said (-1: nothing said since the last finish)
        self._counter: QueryCounter | None = None

    def __call__(self, counter: QueryCounter) -> None:
        if self.training:
            return
        self._counter = counter
        now = time.monotonic()
        if self._started is None:
            self._started = now
        if now - self._started < progress.AFTER or now - self._last < progress.EVERY:
            return
        self._last = now
        self._say(counter)

    def finish(self) -> None:
        """The answering is over (a training starts): its last count, if anything was said."""
        if self._counter is not None and 0 <= self._said != self._counter.count:
            self._say(self._counter)
        self._started, self._last, self._said = None, -math.inf, -1

    def _say(self, counter: QueryCounter) -> None:
        self._said = counter.count
        self.ctx.log(answered_line(counter.count, counter.cap), progress.LEVEL)


def answered_line(count: int, cap: int) -> str:
    """``the suspect answered 12,000 of 20,000 queries`` (without a cap: ``12,000 queries``)."""
    return f"the suspect answered {count:,}" + (f" of {cap:,}" if cap > 0 else "") + " queries"


# -- the checks every refereed job makes ----------------------------------------------------
def check_eval_every(eval_every: int) -> None:
    if eval_every < 1:
        raise ConfigError(f"eval-every must be >= 1, got {eval_every}")


def checked_plugin(name: str, params: Any, budget: AttackerBudget, role: str | None) -> Attack[Any]:
    """The plugin with its params parsed, refusing a budget it cannot use."""
    attack = make_attack(name, params, role=role)
    attack.check_budget(budget)
    return attack


def parsed_budget(values: Any) -> AttackerBudget:
    return (
        values if isinstance(values, AttackerBudget) else AttackerBudget.from_mapping(loose(values))
    )


def referee_claims(
    ctx: JobContext, result: AttackResult, suspect: Suspect, out_run: RunDir | None
) -> dict[str, Any]:
    """The attacker's own keys (piracy), verified by the referee on its test data as an
    owner's would be; each is kept as ``OUT/pirate-key`` (``-2``...) for ``wmtui verify``."""
    verdicts = []
    for index, key in enumerate(result.claims):
        verdict = get_scheme(key.scheme).verify(result.model, key, suspect.data, 1e-3).to_dict()
        verdicts.append({"key": key.describe(), **verdict})
        if out_run is not None:
            save_key(
                out_run.path / ("pirate-key" if index == 0 else f"pirate-key-{index + 1}"), key
            )
        # the verdict first and short (at 80 columns the details were all one saw), then why
        name = "pirate claim" + (f" {index + 1}" if len(result.claims) > 1 else "")
        ctx.log(verdict_line(name, verdict))
        ctx.log(f"  {name}: {verdict['null_reason']}")
    return {"claims": verdicts, "claim_verified": all(v["verified"] for v in verdicts)}


# -- the suspect -----------------------------------------------------------------------------
def source_dataset(run: RunDir, config: Mapping[str, Any]) -> str:
    """The dataset the suspect was trained on; ``auto`` is resolved from the run's summary so a
    different machine does not pick a different dataset."""
    name = str(config.get("dataset", "auto"))
    if name == "auto":
        with contextlib.suppress(RunError):
            name = str(run.summary().get("dataset") or "auto")
    return name


def require_run_dataset(run: RunDir) -> None:
    """The dataset the suspect was trained on is here (a missing one is refused before the
    attack's folder is made)."""
    config = run.manifest()["config"]
    folder = config.get("data_dir") or None
    require_dataset(source_dataset(run, config), Path(folder) if folder else default_data_dir())


def run_dataset(run: RunDir, *, train: bool = True, data_dir: str | None = None) -> DatasetMeta:
    """The dataset ``run``'s model was trained on, as its manifest records it (name, data
    folder, size limits): what a job on that model is checked against before it loads it."""
    config = run.manifest()["config"]
    return dataset_meta(
        source_dataset(run, config),
        data_dir or config.get("data_dir") or None,
        train_size=int(config.get("train_size", 0)),
        test_size=int(config.get("test_size", 0)),
        train=train,
    )


@dataclasses.dataclass
class AttackerView:
    """The run's dataset, the attacker's seed (the budget's, else the run's) and the
    attacker's share of the data: what a budget check needs and the job then uses."""

    data: ImageSet
    seed: int
    attacker: AttackerData


def load_attacker_data(run: RunDir, budget: AttackerBudget, device: torch.device) -> AttackerView:
    config = run.manifest()["config"]
    data = load_dataset(
        source_dataset(run, config),
        config.get("data_dir") or None,
        device=device,
        train_size=int(config.get("train_size", 0)),
        test_size=int(config.get("test_size", 0)),
    ).data
    seed = budget.seed if budget.seed >= 0 else int(config.get("seed", 0))
    attacker = build_attacker_data(budget, data, seed=seed, data_dir=config.get("data_dir") or None)
    return AttackerView(data, seed, attacker)


@dataclasses.dataclass
class Suspect:
    """What an attack or a detector starts from."""

    device: torch.device
    data: ImageSet
    model: nn.Module
    arch: Architecture
    seed: int
    attacker: AttackerData


def load_suspect(
    run: RunDir, budget: AttackerBudget, device: str, view: AttackerView | None = None
) -> Suspect:
    """The device, the run's dataset (``view`` when validation already loaded it on that
    device), its model, the attacker's seed and share of the data."""
    dev = resolve_device(device)
    view = view or load_attacker_data(run, budget, dev)
    model, arch = load_model(run.path, dev)
    return Suspect(dev, view.data, model, arch, view.seed, view.attacker)


# -- the skeleton ----------------------------------------------------------------------------
Work = Callable[[JobContext, Suspect, dict[str, Any]], None]


def refereed_job(
    run: RunDir,
    budget: AttackerBudget,
    out_run: RunDir | None,
    *,
    phase: str,
    device: str,
    head: Callable[[Suspect], dict[str, Any]],
    start_info: Callable[[Suspect], dict[str, Any]],
    work: Work,
    end_info: Callable[[dict[str, Any]], dict[str, Any]],
    view: AttackerView | None = None,
    own_phases: bool = False,
) -> Job:
    """Load the suspect, emit ``Phase(phase, "start")``, run ``work`` (which fills in the
    summary as it goes), and write the summary, also when stopped or diverged.

    ``head`` gives the plugin's own first summary keys; the budget, seed, source run, dataset
    and device follow for every refereed job. ``own_phases``: ``work`` announces its own
    phases (a chain: one per step), so none is wrapped around them."""

    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        suspect = load_suspect(run, budget, device, view)
        hold(ctx, suspect.model, suspect.arch, out_run, phase)
        summary: dict[str, Any] = {
            **head(suspect),
            "budget": budget.to_dict(),
            "seed": suspect.seed,
            "source_run": str(run.path),
            "dataset": suspect.data.name,
            "device": str(suspect.device),
        }
        info = {"test_acc": recorded_test_acc(run), **start_info(suspect)}
        if not own_phases:
            ctx.emit(Phase(phase, "start", info=info))
        with recording_outcome(out_run, summary):
            work(ctx, suspect, summary)
        summary |= {"status": "completed", "seconds": round(time.monotonic() - started, 2)}
        summary = json_safe(summary)
        if out_run is not None:
            out_run.write_summary(summary)
        if not own_phases:
            ctx.emit(Phase(phase, "end", info=end_info(summary)))
        return summary

    return job
