"""Running a sweep: which trials are left, where they run, and what is written as they end.

:func:`run_sweep` reads the trials' folders first (completed trials are kept, never rerun),
then hands the rest to a backend: ``local`` (worker processes on this machine, see below) or
``ray`` (Ray Tune, :mod:`engine.studies.sweep_ray`). Backends report to a :class:`Tracker`, which
rewrites the results files after every trial and tells the front end (``listener``).

Local workers are spawned processes (never forked: torch's thread pools do not survive a
fork), each taking one trial at a time from a shared queue, with the cores split between
them (``cores // workers`` torch threads each). They ignore Ctrl-C: the driver alone decides,
and on an interrupt it sends each worker SIGTERM, which stops the running trial between
steps (its summary written, its completed phases kept for the next run), then kills what has
not ended in time. A worker whose driver vanished (SIGKILL) notices and stops the same way.
Spawning re-imports the caller's main module: a script that runs a local sweep needs the
``if __name__ == "__main__":`` guard (workers that cannot start are given up after a few
tries, their trials marked failed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing as mp
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from engine import stopping
from engine.errors import RunError, unknown_name
from engine.runs import RunDir
from engine.studies.sweep_results import Row, SweepResults, trial_row
from engine.studies.sweep_trial import payload, run_payload, set_threads
from engine.studies.sweeps import SweepPlan, SweepTrial
from engine.threads import split_threads

BACKENDS = ("local", "ray")
#: seconds a stopping worker gets to end its trial cleanly before it is killed
STOP_GRACE = 15.0


@dataclasses.dataclass
class SweepEvent:
    """What a front end is told: a trial changed state (or a note), with the counts."""

    kind: str  # kept | started | completed | failed | stopped | note
    total: int
    done: int
    running: int
    failed: int
    trial: SweepTrial | None = None
    row: Row | None = None
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"event": "trial" if self.trial else "sweep_note"}
        if self.trial is not None:
            data |= {"status": self.kind, "trial": self.trial.key, "point": self.trial.point}
        if self.row is not None:
            data |= {k: self.row[k] for k in ("seconds", "metrics", "error", "run")}
        data |= {"done": self.done, "running": self.running, "failed": self.failed}
        data |= {"total": self.total, "message": self.message}
        return data


Listener = Callable[[SweepEvent], None]


@dataclasses.dataclass(frozen=True)
class SweepOutcome:
    status: str  # completed | failed (some trial did) | stopped
    summary: dict[str, Any]


class Tracker:
    """Where backends report: each ended trial's row goes into the results files at once."""

    def __init__(self, plan: SweepPlan, results: SweepResults, listener: Listener | None) -> None:
        self.plan = plan
        self.results = results
        self.listener = listener
        self.started_at = time.monotonic()
        self.running: set[str] = set()
        self.by_key = {t.key: t for t in plan.trials}

    def _tell(self, kind: str, key: str = "", row: Row | None = None, message: str = "") -> None:
        if self.listener is None:
            return
        self.listener(
            SweepEvent(
                kind,
                total=len(self.plan.trials),
                done=self.results.count("completed"),
                running=len(self.running),
                failed=self.results.count("failed"),
                trial=self.by_key.get(key),
                row=row,
                message=message,
            )
        )

    def note(self, message: str) -> None:
        self._tell("note", message=message)

    def kept(self, trial: SweepTrial) -> None:
        self._tell("kept", trial.key, self.results.rows[trial.key])

    def started(self, key: str) -> None:
        self.running.add(key)
        self.results.update({**self.results.rows[key], "status": "running"})
        self.write()  # a live viewer (sweep --tui) sees which trials run
        self._tell("started", key)

    def finished(self, row: Row) -> None:
        self.running.discard(row["trial"])
        self.results.update(row)
        self.write()
        self._tell(row["status"], row["trial"], row)

    def failed(self, key: str, error: str) -> None:
        self.finished(trial_row(self.by_key[key], "failed", error=error))

    def stopped(self, key: str) -> None:
        """A trial cut short by an interrupt: the next run resumes it."""
        self.running.discard(key)
        row = trial_row(self.by_key[key], "interrupted", error="interrupted; rerun to resume")
        self.results.update(row)
        self._tell("stopped", key, row)

    def write(self) -> dict[str, Any]:
        return self.results.write(time.monotonic() - self.started_at)


def run_sweep(
    plan: SweepPlan,
    backend: str = "local",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    listener: Listener | None = None,
) -> SweepOutcome:
    """Run every trial not completed yet; the files in ``plan.out`` are current throughout."""
    if backend not in BACKENDS:
        raise unknown_name("backend", backend, BACKENDS)
    if workers is not None and workers < 1:
        raise RunError(f"--workers must be at least 1, got {workers}")
    if backend == "ray":
        from engine.studies.sweep_ray import require_ray

        require_ray()  # before anything is written
    prepare_out(plan)
    results = SweepResults(plan)
    kept = results.read_folders()
    tracker = Tracker(plan, results, listener)
    for trial in kept:
        tracker.kept(trial)
    pending = [t for t in plan.trials if results.rows[t.key]["status"] != "completed"]
    tracker.write()
    status = "completed"
    if pending and backend == "local":
        status = run_local(
            plan, pending, workers or default_workers(len(pending)), threads, tracker
        )
    elif pending:
        from engine.studies.sweep_ray import run_ray

        status = run_ray(plan, pending, workers, threads, address, tracker)
    summary = tracker.write()
    if status == "completed" and summary["completed"] < summary["trials"]:
        status = "failed"
    return SweepOutcome(status, summary)


def default_workers(trials: int) -> int:
    """One worker per free core (the one thread policy), never more than there are trials."""
    return split_threads(trials, None, None).workers


def prepare_out(plan: SweepPlan) -> RunDir:
    """The sweep's own folder: made, or reused when it holds this sweep (to resume), never
    when it holds another kind of run."""
    try:
        command = RunDir(plan.out).manifest().get("command")
    except RunError:
        if (plan.out / "manifest.json").exists():
            raise
        command = "sweep"
    if command != "sweep":
        raise RunError(f"{plan.out} holds a {command} run, not a sweep; choose another --out")
    manifest = {
        "command": "sweep",
        "sweep": plan.grid.name,
        "title": plan.grid.title,
        "source": plan.grid.source,
        "axes": plan.grid.axis_names,
        "trials": [{"key": t.key, "point": t.point} for t in plan.trials],
        "config": plan.trials[0].config.to_dict(),  # every run manifest has one
    }
    return RunDir.create(plan.out, manifest, overwrite=True)


# -- local worker processes -----------------------------------------------------------------
def run_local(
    plan: SweepPlan,
    pending: list[SweepTrial],
    workers: int,
    threads: int | None,
    tracker: Tracker,
) -> str:
    """``pending`` on ``workers`` spawned processes; ``completed`` or ``stopped``."""
    split = split_threads(len(pending), workers, threads)
    count, per_worker = split.workers, split.threads
    tracker.note(f"local backend: {split.message()}")
    pool = _Pool(count, per_worker)
    for trial in pending:
        pool.tasks.put(payload(plan, trial, per_worker))
    for _ in range(count):
        pool.tasks.put(None)  # one "no more work" per worker
    left = {t.key for t in pending}
    try:
        pool.start()
        startup_deaths = 0
        while left:
            for message in pool.next_messages():
                _handle(message, pool, tracker, left)
            for key, code in pool.reap():
                if key in left:  # it died in a trial (out of memory, say): that trial failed
                    left.discard(key)
                    tracker.failed(key, f"worker process died (exit code {code})")
                else:
                    startup_deaths += 1
                if startup_deaths > 2 * count:  # they cannot even start: stop trying
                    for lost in sorted(left):
                        tracker.failed(lost, f"worker processes cannot start (exit code {code})")
                    left.clear()
                elif left:
                    pool.spawn()
        pool.finish()
        return "completed"
    except KeyboardInterrupt:
        tracker.note("interrupted: stopping the workers (running trials resume next time)")
        pool.stop()
        for message in pool.drain():
            _handle(message, pool, tracker, left)
        for key in sorted(tracker.running):
            tracker.stopped(key)
        return "stopped"
    finally:
        pool.stop()


def _handle(message: tuple[Any, ...], pool: _Pool, tracker: Tracker, left: set[str]) -> None:
    kind, pid, value = message
    if kind == "started":
        pool.current[pid] = value
        tracker.started(value)
    elif kind == "finished":
        pool.current.pop(pid, None)
        left.discard(value["trial"])
        tracker.finished(value)
    elif kind == "failed":
        key, error = value
        pool.current.pop(pid, None)
        left.discard(key)
        tracker.failed(key, error)


class _Pool:
    """Spawned worker processes around one task queue and one answer queue."""

    def __init__(self, count: int, threads: int) -> None:
        self.threads = threads
        self.ctx = mp.get_context("spawn")
        self.tasks: Any = self.ctx.Queue()
        self.answers: Any = self.ctx.Queue()
        self.count = count
        self.procs: list[Any] = []
        #: worker pid -> key of the trial it runs
        self.current: dict[int, str] = {}

    def start(self) -> None:
        for _ in range(self.count):
            self.spawn()

    def spawn(self) -> None:
        proc = self.ctx.Process(
            target=worker_main,
            args=(self.tasks, self.answers, os.getpid()),
            name="wmtui-sweep-worker",
            daemon=True,
        )
        with _thread_env(self.threads):
            proc.start()
        self.procs.append(proc)

    def next_messages(self, timeout: float = 0.5) -> list[tuple[Any, ...]]:
        try:
            first = self.answers.get(timeout=timeout)
        except queue.Empty:
            return []
        return [first, *self.drain()]

    def drain(self) -> list[tuple[Any, ...]]:
        out = []
        while True:
            try:
                out.append(self.answers.get_nowait())
            except (queue.Empty, OSError, ValueError):
                return out

    def reap(self) -> list[tuple[str, int]]:
        """Workers that ended without being asked to, with the trial each left unfinished."""
        lost = []
        for proc in [p for p in self.procs if p.exitcode is not None]:
            self.procs.remove(proc)
            key = self.current.pop(proc.pid, None)
            if proc.exitcode != 0 or key is not None:
                lost.append((key or "", proc.exitcode))
        return lost

    def finish(self, timeout: float = 10.0) -> None:
        """Let the workers leave on their own (each has read its "no more work")."""
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
        self.stop()

    def stop(self) -> None:
        """SIGTERM every worker (each stops its trial cleanly), then kill the late ones."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for proc in self.procs:
            proc.join(max(0.1, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join(2.0)
        self.procs.clear()
        for handle in (self.tasks, self.answers):
            handle.cancel_join_thread()  # never block the exit on items nobody will read


@contextlib.contextmanager
def _thread_env(threads: int) -> Iterator[None]:
    """The thread-count variables a spawned worker starts with: OpenMP and MKL size their
    pools from them when torch loads, before the worker's ``torch.set_num_threads`` (as Ray
    does for its workers)."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, str(threads)))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def worker_main(tasks: Any, answers: Any, parent: int) -> None:
    """A worker: trials from ``tasks`` until a None, each answered on ``answers``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    for signum in (signal.SIGTERM, signal.SIGHUP):  # the driver's stop, or its group's
        signal.signal(signum, _interrupt)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        while (data := tasks.get()) is not None:
            set_threads(data["threads"])
            answers.put(("started", os.getpid(), data["key"]))
            try:
                row = _runner(data)(data)
            except Exception as exc:  # a bug or a broken folder: this trial fails, not the sweep
                answers.put(("failed", os.getpid(), (data["key"], f"{type(exc).__name__}: {exc}")))
                continue
            answers.put(("finished", os.getpid(), row))
    except KeyboardInterrupt:
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)  # nothing left to stop cleanly


def _runner(data: dict[str, Any]) -> Callable[[dict[str, Any]], Any]:
    """A sweep trial's payload, or a recipe phase's (:mod:`engine.studies.phase_run`): one
    pool of workers runs both."""
    if data.get("type") == "phase":
        from engine.studies.phase_run import run_phase_payload

        return run_phase_payload
    return run_payload


def _interrupt(signum: int, frame: Any) -> None:
    """The trial stops cleanly. The signal often comes twice (to the process group, then
    from the driver's own stop): the second must not cut that stop short, so it is ignored;
    a worker that does not end in time is killed by the driver or leaves when it is gone."""
    stopping.note_signal(signal.Signals(signum).name)  # the trial's summary names it
    for each in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(each, signal.SIG_IGN)
    raise KeyboardInterrupt


def _watch_parent(parent: int) -> None:
    """Stop this worker when its driver is gone (killed, or its terminal closed)."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(STOP_GRACE)
    os._exit(1)
