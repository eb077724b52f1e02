"""Running a phase graph: each unique phase once, as soon as its input is done.

The scheduler walks the graph of :mod:`engine.studies.phase_graph`: a phase whose cache
folder completed is *kept*; a phase is *ready* when the phase it works on is done; ready
phases go to an executor, deepest first (an attack whose embedding is done before the next
embedding, so the matrix fills cell by cell). A failed phase fails the phases that need it
(*blocked*) and nothing else.

Executors: ``--workers 1`` (default) runs each phase on the recipe's own context, so the
playground follows it live; ``--workers N`` puts them on the sweep's spawned worker processes
(:class:`engine.studies.sweep_backends._Pool`, the cores split between them, SIGTERM and
parent-death handling included); ``--backend ray`` on Ray tasks
(:mod:`engine.studies.phase_ray`). A Stop (Ctrl-C, SIGTERM) stops the running phases
between steps; a run killed outright leaves folders without a completed summary, which the
next run starts again. Either way no finished phase runs twice.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from engine.errors import ConfigError, unknown_name
from engine.session import JobContext, StopRequested
from engine.studies.phase_cache import phase_done, phase_seconds
from engine.studies.phase_graph import PhaseGraph, PhaseNode
from engine.studies.phase_run import Outcome, payload, run_in_context
from engine.studies.scenario_runner import PhaseRouter
from engine.threads import split_threads

BACKENDS = ("local", "ray")
DONE = ("kept", "completed")


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Where the phases run: ``--backend``, ``--workers``, ``--threads``, ``--address``."""

    backend: str = "local"
    workers: int = 1
    threads: int | None = None
    address: str | None = None

    def check(self) -> None:
        """One line for a bad combination, before anything is written."""
        if self.backend not in BACKENDS:
            raise unknown_name("backend", self.backend, BACKENDS)
        if self.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {self.workers}")
        if self.address and self.backend != "ray":
            raise ConfigError("--address names a Ray cluster: it needs --backend ray")
        if self.backend == "ray":
            from engine.studies.sweep_ray import require_ray

            require_ray()


@dataclasses.dataclass
class GraphState:
    """Every node's status (pending, running, kept, completed, failed, blocked, stopped),
    time and error: what ``recipe.json`` reports under ``phases``."""

    graph: PhaseGraph
    status: dict[str, str]
    seconds: dict[str, float]
    errors: dict[str, str]

    @classmethod
    def read(cls, graph: PhaseGraph) -> GraphState:
        """What the cache holds now: done phases kept, the rest pending."""
        status = {k: "kept" if phase_done(n) else "pending" for k, n in graph.nodes.items()}
        seconds = {k: phase_seconds(n) for k, n in graph.nodes.items() if status[k] == "kept"}
        return cls(graph, status, seconds, {})

    def count(self, *statuses: str) -> int:
        return sum(s in statuses for s in self.status.values())

    def trial_done(self, trial: str) -> bool:
        return all(self.status[k] in DONE for k in self.graph.trials[trial].values())

    def trial_status(self, trial: str) -> str:
        """completed, failed (a phase failed or was blocked), stopped, else missing."""
        states = [self.status[k] for k in self.graph.trials[trial].values()]
        if all(s in DONE for s in states):
            return "completed"
        for status in ("failed", "blocked", "stopped"):
            if status in states:
                return "failed" if status == "blocked" else status
        return "missing"

    def counts(self) -> dict[str, int]:
        done = self.count(*DONE)
        return {
            "total": len(self.status),
            "in_trials": self.graph.uses,
            "done": done,
            "ran": self.count("completed"),
            "kept": self.count("kept"),
            "running": self.count("running"),
            "failed": self.count("failed", "blocked"),
        }

    def table(self, out: Path) -> dict[str, Any]:
        """``recipe.json``'s ``phases``: the counts and, per key, what and where."""
        items = {}
        for key, node in self.graph.nodes.items():
            items[key] = {
                "name": node.spec.name,
                "kind": node.spec.kind,
                "plugin": node.spec.plugin,
                "label": node.label,
                "input": node.input,
                "after": node.after,
                "folder": _shown(node.folder, out),
                "status": self.status[key],
                "seconds": round(self.seconds.get(key, 0.0), 2),
                "error": self.errors.get(key, ""),
                "trials": len(node.uses),
            }
        return {**self.counts(), "cache": _shown(self.graph.cache, out), "items": items}


def _shown(path: Path, out: Path) -> str:
    """A path relative to the recipe's folder where it lies inside it (the folder moves
    whole), else as given."""
    try:
        return str(path.resolve().relative_to(out.resolve()))
    except ValueError:
        return str(path)


class Executor(Protocol):
    capacity: int

    def launch(self, node: PhaseNode, source: Path | None) -> None: ...

    def poll(self, timeout: float) -> list[Outcome]: ...

    def stop(self) -> None: ...

    def close(self) -> None: ...


class InProcess:
    """``--workers 1``: each phase on the driver's context, one after another."""

    capacity = 1

    def __init__(self, ctx: JobContext, router: PhaseRouter, total: int) -> None:
        self.ctx, self.router, self.total = ctx, router, total
        self.done: list[Outcome] = []
        self.index = 0

    def launch(self, node: PhaseNode, source: Path | None) -> None:
        self.index += 1
        position = (self.index, self.total)
        self.done.append(run_in_context(self.ctx, node, source, self.router, position))

    def poll(self, timeout: float) -> list[Outcome]:
        done, self.done = self.done, []
        return done

    def stop(self) -> None:
        """The phase stopped itself (its job raised StopRequested)."""

    def close(self) -> None:
        """Nothing to release."""


class LocalPool:
    """``--workers N``: the sweep's spawned worker processes, fed one ready phase at a time."""

    def __init__(self, workers: int, pending: int, threads: int | None, log: Callable) -> None:
        from engine.studies.sweep_backends import _Pool

        split = split_threads(pending, workers, threads)
        log(f"local backend: {split.message()}")
        self.capacity, self.threads = split.workers, split.threads
        self.pool = _Pool(split.workers, split.threads)
        self.pool.start()
        self.inflight: set[str] = set()
        self.deaths = 0

    def launch(self, node: PhaseNode, source: Path | None) -> None:
        self.inflight.add(node.key)
        self.pool.tasks.put(payload(node, source, self.threads))

    def poll(self, timeout: float) -> list[Outcome]:
        ended = []
        for kind, pid, value in self.pool.next_messages(timeout):
            if kind == "started":
                self.pool.current[pid] = value
            elif kind == "finished":
                self.pool.current.pop(pid, None)
                ended.append(Outcome(**value))
            elif kind == "failed":
                self.pool.current.pop(pid, None)
                ended.append(Outcome(value[0], "failed", error=value[1]))
        for key, code in self.pool.reap():
            if key:  # it died in a phase (out of memory, say): that phase failed
                ended.append(Outcome(key, "failed", error=f"worker process died (exit {code})"))
            else:
                self.deaths += 1
            if self.deaths > 2 * self.capacity:
                raise ConfigError(f"worker processes cannot start (exit code {code})")
            self.pool.spawn()
        self.inflight -= {o.key for o in ended}
        return ended

    def stop(self) -> None:
        self.pool.stop()

    def close(self) -> None:
        for _ in range(self.capacity):
            self.pool.tasks.put(None)  # one "no more work" per worker
        self.pool.finish()


class Scheduler:
    """Runs a graph's pending phases on an executor; ``changed`` is told after each end."""

    def __init__(
        self,
        ctx: JobContext,
        graph: PhaseGraph,
        options: RunOptions,
        router: PhaseRouter,
        changed: Callable[[GraphState, Outcome], None],
    ) -> None:
        self.ctx, self.graph, self.options, self.router = ctx, graph, options, router
        self.changed = changed
        self.state = GraphState.read(graph)
        self.depth: dict[str, int] = {}
        for key in graph.nodes:  # inputs come first
            self.depth[key] = self._depth(key)

    def _depth(self, key: str) -> int:
        node = self.graph.nodes[key]
        return 1 + max((self.depth[k] for k in node.needs), default=-1)

    def ready(self) -> list[PhaseNode]:
        status = self.state.status
        found = [
            n
            for k, n in self.graph.nodes.items()
            if status[k] == "pending" and all(status[need] in DONE for need in n.needs)
        ]
        return sorted(found, key=lambda n: -self.depth[n.key])

    def run(self) -> GraphState:
        state = self.state
        pending = state.count("pending")
        self.ctx.log(
            f"phases: {len(self.graph.nodes)} unique in {self.graph.uses} trial phases; "
            f"{state.count('kept')} done earlier, {pending} to run"
        )
        if not pending:
            return state
        executor = self._executor(pending)
        try:
            self._loop(executor)
        except (StopRequested, KeyboardInterrupt):
            executor.stop()
            for key, status in state.status.items():
                if status == "running":
                    state.status[key] = "stopped"
            raise StopRequested from None
        finally:
            executor.close()
        return state

    def _executor(self, pending: int) -> Executor:
        options = self.options
        if options.backend == "ray":
            from engine.studies.phase_ray import RayTasks

            return RayTasks(options.workers, options.threads, options.address, self.ctx.log)
        if options.workers > 1:
            return LocalPool(options.workers, pending, options.threads, self.ctx.log)
        return InProcess(self.ctx, self.router, pending)

    def _loop(self, executor: Executor) -> None:
        state = self.state
        while True:
            if not isinstance(executor, InProcess):
                self.ctx.check_stop()
            running = state.count("running")
            for node in self.ready()[: max(0, executor.capacity - running)]:
                state.status[node.key] = "running"
                self._say("started", node)
                source = self.graph.nodes[node.input].folder if node.input else None
                executor.launch(node, source)
            if not state.count("running"):
                return
            for outcome in executor.poll(0.5):
                self._ended(outcome)

    def _ended(self, outcome: Outcome) -> None:
        state, node = self.state, self.graph.nodes[outcome.key]
        state.status[outcome.key] = outcome.status
        if outcome.status == "kept":  # another run computed it meanwhile
            state.seconds[outcome.key] = phase_seconds(node)
        else:
            state.seconds[outcome.key] = outcome.seconds
        if outcome.error:
            state.errors[outcome.key] = outcome.error
        if outcome.status == "failed":
            for key in self.graph.dependents(outcome.key):
                state.status[key] = "blocked"
                state.errors[key] = f"its input {node.label} failed"
        self._say(outcome.status, node, outcome.error)
        self.changed(state, outcome)

    def _say(self, what: str, node: PhaseNode, error: str = "") -> None:
        """One line per phase event, with the counts (the sweep's progress style)."""
        c = self.state.counts()
        counts = f"{c['done']}/{c['total']} done, {c['running']} running, {c['failed']} failed"
        detail = f": {error}" if error else ""
        level = "error" if what == "failed" else "info"
        self.ctx.log(f"phase {what}: {node.label} [{node.key}]{detail} ({counts})", level)
