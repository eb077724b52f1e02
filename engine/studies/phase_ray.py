"""The Ray executor of a phase graph: each ready phase as one Ray task.

A sweep's trials are independent, so a sweep hands them to Ray Tune at once
(:mod:`engine.studies.sweep_ray`); a graph's phases wait for their inputs, so the scheduler
submits each phase as a plain Ray task when it becomes ready and collects them with
``ray.wait``. The task runs the phase's payload exactly as a local worker does
(:func:`engine.studies.phase_run.run_phase_payload`, absolute paths: the nodes share the
cache folder). Resuming needs no Ray state: the cache folders are the record. The cluster is
joined or started as a sweep does (``--address``, else a private loopback-only Ray shut down
afterwards); a stop cancels the running tasks, whose folders the next run starts again.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from engine.studies.phase_graph import PhaseNode
from engine.studies.phase_run import Outcome, Payload, payload
from engine.studies.sweep_ray import (
    _QUIET_ENV,
    STOPPED_SHUTDOWN_S,
    connect,
    disconnect,
    require_ray,
)


def ray_phase(data: Payload) -> dict[str, Any]:
    """One phase in a Ray worker (its share of the cores set first)."""
    from engine.studies.phase_run import run_phase_payload
    from engine.studies.sweep_trial import set_threads

    set_threads(int(data["threads"]))
    return run_phase_payload(data)


class RayTasks:
    """Ready phases as Ray tasks, at most ``workers`` at once (default: one per CPU)."""

    def __init__(
        self, workers: int, threads: int | None, address: str | None, log: Callable
    ) -> None:
        self.ray = require_ray()
        for name, value in _QUIET_ENV.items():
            os.environ.setdefault(name, value)
        self.temp = connect(self.ray, address) if not self.ray.is_initialized() else None
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.threads = threads or max(1, cpus // max(1, workers))
        self.capacity = workers if workers > 1 else max(1, cpus // self.threads)
        self.gpus = 1 if self.ray.cluster_resources().get("GPU", 0) > 0 else 0
        self.task = self.ray.remote(ray_phase)
        self.refs: dict[Any, str] = {}
        self.stopped = False
        log(f"ray backend: {cpus} CPUs, {self.capacity} task(s) x {self.threads} thread(s)")

    def launch(self, node: PhaseNode, source: Path | None) -> None:
        data = payload(node, source, self.threads)
        gpus = 0 if node.config.device == "cpu" else self.gpus  # a cpu phase takes no GPU
        task = self.task.options(num_cpus=self.threads, num_gpus=gpus)
        self.refs[task.remote(data)] = node.key

    def poll(self, timeout: float) -> list[Outcome]:
        if not self.refs:
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        ended = []
        for ref in ready:
            key = self.refs.pop(ref)
            try:
                ended.append(Outcome(**self.ray.get(ref)))
            except Exception as exc:  # the task raised or its worker died
                text = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
                ended.append(Outcome(key, "failed", error=f"ray: {type(exc).__name__}: {text}"))
        return ended

    def stop(self) -> None:
        self.stopped = True
        for ref in list(self.refs):
            with contextlib.suppress(Exception):  # already finished or gone
                self.ray.cancel(ref, force=True)
        self.refs.clear()

    def close(self) -> None:
        if self.temp is not None:
            wait = STOPPED_SHUTDOWN_S if self.stopped else None
            disconnect(self.ray, self.temp, wait=wait)
