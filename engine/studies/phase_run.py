"""One phase of the graph, run wherever the scheduler puts it: this process or a worker.

Every phase runs the same way: its :class:`~engine.jobs.spec.JobSpec` (the scenario phase's
own, with the input phase's cache folder as its source) built and run into the phase's cache
folder, under that folder's lock. In the driver it runs on the recipe's own context (the
playground's dashboard follows it live); in a local worker process or on a Ray node it
travels as a *payload* of plain values and runs on a session of its own, which a SIGTERM
stops between steps (its summary says so, and the next run starts it again).
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from engine import commands as cmd
from engine.config import TrainConfig
from engine.errors import RunError, UserError
from engine.events import Phase
from engine.runs import EventLog, RunDir
from engine.session import Job, JobContext, Session, StopRequested
from engine.studies.phase_cache import (
    finish_trial,
    link_trial,
    phase_done,
    phase_lock,
    phase_seconds,
    write_record,
)
from engine.studies.phase_graph import PhaseNode, build_graph
from engine.studies.scenario_runner import PhaseRouter
from engine.studies.scenarios import PhaseSpec, Scenario

Payload = dict[str, Any]
#: seconds an interrupted phase gets to stop between steps and write its summary
STOP_WAIT = 10.0


@dataclasses.dataclass
class Outcome:
    """How one phase ended: completed, kept (done already), failed or stopped."""

    key: str
    status: str
    seconds: float = 0.0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def payload(node: PhaseNode, source: Path | None, threads: int) -> Payload:
    """What a worker needs to run ``node`` (plain values only; absolute paths, since a Ray
    worker's folder is not the driver's)."""
    return {
        "type": "phase",
        "key": node.key,
        "spec": node.spec.to_dict(),
        "config": node.config.to_dict(),
        "scenario": node.scenario,
        "folder": str(node.folder.resolve()),
        "source": str(source.resolve()) if source is not None else None,
        "input": node.input,
        "after": node.after,
        "threads": threads,
    }


def rebuild(data: Payload) -> tuple[PhaseNode, Path | None]:
    spec = PhaseSpec(**data["spec"])
    config = TrainConfig.from_mapping(data["config"])
    node = PhaseNode(
        data["key"], spec, config, data["scenario"], data["input"], Path(data["folder"])
    )
    node.after = list(data.get("after") or [])
    return node, Path(data["source"]) if data["source"] else None


def build_phase_job(node: PhaseNode, source: Path | None) -> tuple[Job, RunDir]:
    """The phase's job and its (new or cleared) run folder, checked as the headless command
    checks it; an attack's source must hold the model it works on."""
    if source is not None and not (source / "model.safetensors").is_file():
        raise RunError(f"phase {node.label}: its input {source} left no model to work on")
    spec = node.spec.job_spec(node.config, source, node.folder, node.scenario)
    built = dataclasses.replace(spec, overwrite=True).build()
    assert built.run is not None
    return built.job, built.run


def run_phase_payload(data: Payload) -> dict[str, Any]:
    """Run one phase (a worker's or a Ray task's entry); answers its :class:`Outcome` as a
    dict. An interrupt (the driver's SIGTERM, KeyboardInterrupt here) stops the phase
    between steps, lets it write its summary and re-raises."""
    started = time.monotonic()
    node, source = rebuild(data)
    with phase_lock(node.folder):
        if phase_done(node) is not None:
            return Outcome(node.key, "kept").to_dict()
        try:
            job, run = build_phase_job(node, source)
        except UserError as exc:
            return Outcome(node.key, "failed", error=str(exc).splitlines()[0]).to_dict()
        sink = run.event_sink()
        session = Session(job, [sink])
        session.ctx.log(f"phase {node.label} ({node.key})")
        run_to_end(session, sink)
        seconds = time.monotonic() - started
        if session.status == "completed" and phase_done(node) is not None:
            write_record(node, seconds)
            return Outcome(node.key, "completed", round(seconds, 2)).to_dict()
        error = _error(session.error) if session.error else f"phase {session.status}"
        return Outcome(node.key, "failed", round(seconds, 2), error).to_dict()


def run_in_context(
    ctx: JobContext,
    node: PhaseNode,
    source: Path | None,
    router: PhaseRouter,
    position: tuple[int, int],
) -> Outcome:
    """Run ``node`` on the driver's own context (``--workers 1``): its events reach the
    session's sinks (the playground, the recipe's stream) and the phase's own folder.
    A Stop raises :class:`StopRequested` after the phase wrote its summary."""
    started = time.monotonic()
    index, total = position
    info = {
        "scenario": node.scenario,
        "title": node.spec.title or node.label,
        "run": str(node.folder),
    }
    info |= {"kind": node.spec.kind, "plugin": node.spec.plugin, "key": node.key}
    ctx.reset_handlers()
    ctx.skippable = False  # a shared phase is whole or not run: skipping is not offered
    with phase_lock(node.folder):
        if phase_done(node) is not None:
            return Outcome(node.key, "kept")
        ctx.emit(Phase(node.spec.name, "start", index=index, total=total, info=info))
        outcome = Outcome(node.key, "failed")
        try:
            job, run = build_phase_job(node, source)
        except UserError as exc:
            outcome.error = str(exc).splitlines()[0]
        else:
            sink = run.event_sink()
            router.current = sink
            try:
                job(ctx)
                outcome.status = "completed" if phase_done(node) is not None else "failed"
                outcome.error = "" if outcome.status == "completed" else "no completed summary"
            except StopRequested:
                outcome.status = "stopped"
                raise
            except Exception as exc:  # this phase fails; the others go on
                outcome.error = _error(exc)
                ctx.log(traceback.format_exc(), level="error")
            finally:
                router.current = None
                sink.close()
                outcome.seconds = round(time.monotonic() - started, 2)
                if outcome.status == "completed":
                    write_record(node, outcome.seconds)
                end = {**info, "status": outcome.status}
                ctx.emit(Phase(node.spec.name, "end", index=index, total=total, info=end))
        return outcome


def run_trial_phases(
    trial: str, scenario: Scenario, config: TrainConfig, folder: Path, cache: Path, threads: int
) -> tuple[dict[str, Any] | None, str]:
    """A whole trial's phases through ``cache``, one after another in this process (a sweep
    trial given ``--cache``): each phase another run completed is kept, the others run under
    their folder's lock, the trial folder links to them. Returns (the trial's summary, "")
    or (None, why it did not complete)."""
    graph = build_graph([(trial, scenario, config)], cache)
    seconds: dict[str, float] = {}
    for node in graph.nodes.values():  # inputs come first
        source = graph.nodes[node.input].folder if node.input else None
        outcome = run_phase_payload(payload(node, source, threads))
        seconds[node.key] = float(outcome["seconds"]) or phase_seconds(node)
        link_trial(folder, scenario, config, graph, trial)
        if outcome["status"] not in ("kept", "completed"):
            return None, f"phase {node.label}: {outcome['error'] or outcome['status']}"
    summary = finish_trial(folder, scenario, config, graph, trial, seconds)
    return summary, "" if summary is not None else "a phase left no completed summary"


def run_to_end(session: Session, sink: EventLog) -> None:
    """Start ``session`` and wait for it here. Ctrl-C or SIGTERM (a KeyboardInterrupt in this
    process) stops it once, gives it ``STOP_WAIT`` seconds to end between steps and re-raises;
    the sink is closed only once the worker thread has ended, never under it."""
    session.start()
    try:
        wait_session(session)
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one stop is enough
        session.send(cmd.Stop())
        wait_session(session, STOP_WAIT)
        raise
    finally:
        if not session.running:
            sink.close()


def wait_session(session: Session, timeout: float | None = None) -> None:
    """Wait for the session's worker with short sleeps, never ``Thread.join`` (a signal that
    interrupts a join can leave the thread counted as ended while it still runs)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while session.running and (deadline is None or time.monotonic() < deadline):
        time.sleep(0.1)


def _error(error: BaseException) -> str:
    """The first line of a failure (a bug's traceback stays in the phase's events)."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text if isinstance(error, UserError) else f"{type(error).__name__}: {text}"
