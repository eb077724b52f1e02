"""How many CPU threads torch's intra-op pool gets: one policy for every command.

torch starts one intra-op thread per core, and those threads spin while they wait. On a
machine others are using too, that oversubscribes the cores: LeNet-5 on a shared 2-core
box ran at 160-260 img/s with torch's default and at about 10k img/s with one thread. So the
count is chosen, in this order:

1. ``--threads N`` (``requested``): the user knows best; N must be 1..1024.
2. ``OMP_NUM_THREADS``, when it is a positive integer: the usual way a job is pinned by a
   scheduler or a shell profile, and what torch itself would have honoured.
3. The free cores: the CPUs this process may run on (``os.sched_getaffinity``) minus the
   1-minute load average (``os.getloadavg``), rounded and clamped to ``[1, cores]``. When the
   playground shares the process with the worker (``ui=True``), one more core is left to
   the screen, so keys and repaints are not queued behind spinning workers.

The choice is applied with ``torch.set_num_threads`` before the work starts (a worker thread
that starts later inherits it) and logged into the run, so a slow run can be explained.
Sweeps share the same count among their worker processes (:func:`split_threads`): one
worker per core on a loaded machine ran trials at 254-840 img/s.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from engine.errors import ConfigError

MAX_THREADS = 1024


class ThreadChoice(NamedTuple):
    count: int
    reason: str

    def message(self) -> str:
        return f"cpu threads: {self.count} ({self.reason})"


def usable_cores() -> int:
    """The CPUs this process may run on (a container's or taskset's limit included)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def current_load() -> float:
    """The 1-minute load average; 0 where the platform has none."""
    try:
        return max(0.0, os.getloadavg()[0])
    except (AttributeError, OSError):
        return 0.0


def env_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive count (its first entry), or None if unset or not one."""
    text = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        count = int(text)
    except ValueError:
        return None
    return count if 1 <= count <= MAX_THREADS else None


def choose_threads(requested: int | None, *, ui: bool = False) -> ThreadChoice:
    """The intra-op thread count and why (see the module docstring for the rule)."""
    if requested is not None:
        if not 1 <= requested <= MAX_THREADS:
            raise ConfigError(f"--threads must be between 1 and {MAX_THREADS}, got {requested}")
        return ThreadChoice(requested, "--threads")
    from_env = env_threads()
    if from_env is not None:
        return ThreadChoice(from_env, "OMP_NUM_THREADS")
    cores, load = usable_cores(), current_load()
    free = round(cores - load) - (1 if ui else 0)
    count = min(cores, max(1, free))
    reason = f"{cores} cores, load {load:.1f}" + (", one left to the screen" if ui else "")
    return ThreadChoice(count, f"automatic: {reason}; --threads N to choose")


def apply_threads(requested: int | None, *, ui: bool = False) -> str:
    """Choose, apply to torch, and return the line to log into the run."""
    import torch

    choice = choose_threads(requested, ui=ui)
    torch.set_num_threads(choice.count)
    return choice.message()


class WorkerSplit(NamedTuple):
    workers: int
    threads: int  # torch threads in each worker
    reason: str

    def message(self) -> str:
        return f"{self.workers} worker(s) x {self.threads} torch thread(s) each ({self.reason})"


def split_threads(trials: int, workers: int | None, threads: int | None) -> WorkerSplit:
    """Worker processes for ``trials`` and torch threads in each, by the rule above: the
    chosen count (``OMP_NUM_THREADS``, else the free cores) is shared among the workers,
    one worker per thread unless ``--workers`` says; ``--threads`` is per worker."""
    budget = choose_threads(None)
    count = workers or min(trials, budget.count)
    count = max(1, min(count, trials))
    if threads is not None:
        return WorkerSplit(count, choose_threads(threads).count, "--threads")
    return WorkerSplit(count, max(1, budget.count // count), budget.reason)
