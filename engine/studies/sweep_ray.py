"""The Ray backend of a sweep: the pending trials as one Ray Tune experiment.

Each trial is a Tune trial of a grid search over trial keys; the trainable rebuilds the trial
from its payload (plain values, handed over by ``tune.with_parameters``) and runs it exactly
as a local worker does, into ``OUT/trials/<key>/``. Its results row comes back through
``tune.report``, so ``results.csv`` is complete even where the cluster's nodes do not share
``OUT``. Tune's own state lives in ``OUT/ray/``; a sweep run again restores that experiment
(``Tuner.restore(..., resume_errored=True)``) and runs whatever it left, and any trial still
not completed after that (one Ray counted as finished whose folder is gone, say) in a fresh
experiment.

Without ``--address`` a private Ray is started for the sweep and shut down after it: its
temporary folder is short (``/tmp/wmtui-ray-PID``: Ray's socket paths must fit in 107
characters) and removed afterwards, its node listens on the loopback only, and no dashboard
is started. ``ray.init`` turns token authentication on by default (Ray 2.59+) unless
``RAY_AUTH_MODE`` says otherwise; a loopback-only cluster is safe either way.

One Ray per process: after a Ray is shut down, a Ray Tune experiment on a new one in the same
process has its trial actors cancelled before they start (Ray 2.x; measured here with a bare
``ray.init``/``ray.shutdown`` before the sweep, not only ours). A sweep after such a shutdown
is refused in one line, rather than ending with every trial failed; the command line runs
each sweep in a process of its own, and from Python a second sweep needs a new process (or a
Ray the caller keeps initialised across both).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from engine import stopping
from engine.errors import ConfigError, RunError
from engine.studies.grid import trial_key
from engine.studies.sweep_trial import Payload, payload, run_payload, set_threads
from engine.studies.sweeps import SweepPlan, SweepTrial
from engine.threads import usable_cores

INSTALL_HINT = "the ray backend needs Ray: pip install 'wmtui[ray]' (or pip install 'ray[tune]')"
RAY_DIR = "ray"
#: the tracker the driver's Tune callback reports to (a callback is pickled with the
#: experiment's state, so it holds no reference of its own)
_ACTIVE: dict[str, Any] = {}
#: set once this process has shut a Ray down (a Tune experiment after that would not start)
_SHUT_DOWN: list[bool] = []
SECOND_RAY = (
    "a Ray was shut down earlier in this process, and Ray Tune's trials do not start on a "
    "second one: run this sweep in a new process (wmtui sweep does), or keep one Ray "
    "initialised for both"
)


class TrialFailed(RuntimeError):
    """A trial that ended in failure: Tune marks it errored, so a restore retries it."""


def require_ray() -> Any:
    """``ray`` with Tune, or one line saying how to get it."""
    try:
        import ray
        from ray import tune  # noqa: F401
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def run_ray(
    plan: SweepPlan,
    pending: list[SweepTrial],
    workers: int | None,
    threads: int | None,
    address: str | None,
    tracker: Any,
) -> str:
    """Run ``pending`` on Ray; ``completed`` or ``stopped``."""
    ray = require_ray()
    if _SHUT_DOWN:
        raise RunError(SECOND_RAY)
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)
    temp = None
    if not ray.is_initialized():
        ours = signal.getsignal(signal.SIGTERM)
        temp = connect(ray, address)
        if ours is not None and threading.current_thread() is threading.main_thread():
            # ray.init makes SIGTERM a bare sys.exit: the sweep's own stop (the trials
            # stopped, Ray shut down, its helpers ended) is what SIGTERM must do
            signal.signal(signal.SIGTERM, ours)
    outcome = "stopped"  # until the experiment returns: an interrupt lands in between
    try:
        tracker.note(
            f"ray backend: {ray.cluster_resources().get('CPU', 0):.0f} CPUs in the cluster"
        )
        outcome = _fit_all(plan, pending, workers, threads, tracker)
        return outcome
    except Exception:
        if stopping.signalled():
            # the signal reached the private Ray's processes too (they share the driver's
            # process group): whatever Ray raised as its raylet went is the stop, not a fault
            return outcome
        raise
    finally:
        if temp is not None:  # connected here: disconnect (and remove a private Ray's files)
            disconnect(ray, temp, wait=STOPPED_SHUTDOWN_S if outcome == "stopped" else None)


def disconnect(ray: Any, temp: str, wait: float | None) -> None:
    """``ray.shutdown``, then a private Ray's leftovers killed and its files removed. After
    a stop (``wait`` seconds) the shutdown is not waited for: with its raylet gone to the
    process group's SIGTERM it hangs on the GCS, and a trial's actor (in a process group of
    its own, busy in a step) never hears the signal; both were still alive 80 s after the
    sweep's SIGTERM. Killing what names the private temp folder ends them all."""
    done = threading.Thread(target=ray.shutdown, daemon=True)
    done.start()
    done.join(wait)
    _SHUT_DOWN.append(True)
    if temp:
        end_processes_of(temp)
        shutil.rmtree(temp, ignore_errors=True)


#: after a stop, how long ``ray.shutdown`` may take before the private Ray is killed
STOPPED_SHUTDOWN_S = 1.0


def connect(ray: Any, address: str | None) -> str | None:
    """Join ``address``'s cluster, or start a private local one (its temp folder returned,
    to be removed once it is shut down)."""
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        ray.init(address=address, **quiet)
        return ""
    _remove_stale(Path(_short_tmp()))
    temp = tempfile.mkdtemp(prefix=f"wmtui-ray-{os.getpid()}-", dir=_short_tmp())
    ray.init(
        num_cpus=usable_cores(),
        include_dashboard=False,
        _temp_dir=temp,
        _node_ip_address="127.0.0.1",
        **quiet,
    )
    return temp


def _remove_stale(base: Path) -> None:
    """Temp folders of private Rays whose sweep was killed (SIGKILL leaves no cleanup), and
    the helper processes such a Ray left running."""
    for folder in base.glob("wmtui-ray-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not _alive(int(pid)):
            end_processes_of(str(folder))
            shutil.rmtree(folder, ignore_errors=True)


def end_processes_of(temp: str) -> list[int]:
    """Kill what is left of a private Ray: ``ray.shutdown`` stops the node, but a SIGTERM
    to the whole process group reaches Ray's helpers (``ray::DashboardAgent``,
    ``ray::RuntimeEnvAgent``) too, and those that lose their raylet first stay behind. They
    rename themselves, but each names the private temp folder in its command line or logs
    into it, so nothing else is touched. Returns the pids killed (Linux: /proc; elsewhere
    nothing is found)."""
    killed = []
    for entry in Path("/proc").glob("[0-9]*"):
        pid = int(entry.name)
        if pid != os.getpid() and _uses(entry, temp):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def _uses(proc: Path, temp: str) -> bool:
    """Whether the process behind ``/proc/PID`` names ``temp`` or holds a file under it."""
    try:
        if temp.encode() in (proc / "cmdline").read_bytes():
            return True
        return any(os.readlink(fd).startswith(temp) for fd in (proc / "fd").iterdir())
    except OSError:  # gone meanwhile, or not ours to read
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _short_tmp() -> str:
    """A folder whose paths leave room for Ray's sockets under it."""
    base = tempfile.gettempdir()
    return base if len(base) <= 40 else "/tmp"


def _fit_all(
    plan: SweepPlan,
    pending: list[SweepTrial],
    workers: int | None,
    threads: int | None,
    tracker: Any,
) -> str:
    from ray import tune

    cpus = _cpus_per_trial(workers, threads)
    # every trial's payload, not only the pending ones': a restored experiment may resume a
    # trial that completed just before Tune recorded it (it is then read, not run)
    payloads = {t.key: payload(plan, t, int(cpus)) for t in plan.trials}
    pending_keys = [t.key for t in pending]
    storage = (plan.out / RAY_DIR).resolve()
    name = "sweep-" + trial_key(sorted(t.key for t in plan.trials))
    _ACTIVE["tracker"], _ACTIVE["seen"] = tracker, set()
    try:
        trainable = tune.with_resources(
            tune.with_parameters(ray_trainable, payloads=payloads), _resources(pending, cpus)
        )
        path = storage / name
        if tune.Tuner.can_restore(str(path)):
            tracker.note(f"ray: restoring experiment {path}")
            tuner = tune.Tuner.restore(str(path), trainable, resume_errored=True)
        else:
            tuner = _tuner(trainable, pending_keys, storage, name, workers)
        if not _fit(tuner, tracker):
            return "stopped"
        left = [k for k in pending_keys if k not in _ACTIVE["seen"]]
        if left:  # trials the restored experiment had counted as finished
            tracker.note(f"ray: {len(left)} trial(s) left over, in a new experiment")
            extra = f"{name}-{trial_key(sorted(left))}"
            if not _fit(_tuner(trainable, left, storage, extra, workers), tracker):
                return "stopped"
        return "completed"
    finally:
        _ACTIVE.clear()


def _cpus_per_trial(workers: int | None, threads: int | None) -> float:
    """``--threads`` when given, else the cluster's CPUs shared by ``--workers``, else 1."""
    import ray

    if threads:
        return float(threads)
    if workers:
        return float(max(1, int(ray.cluster_resources().get("CPU", 1)) // workers))
    return 1.0


def _resources(pending: list[SweepTrial], cpus: float) -> Any:
    """{"cpu": c, "gpu": g}: g is 1 for a cuda trial (or auto, where the cluster has GPUs)."""
    import ray

    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    gpus = {t.key: _gpus(t.config.device, has_gpu) for t in pending}
    if len(set(gpus.values())) == 1:
        return {"cpu": cpus, "gpu": next(iter(gpus.values()))}
    from ray import tune

    return lambda config: tune.PlacementGroupFactory(
        [{"CPU": cpus, "GPU": gpus.get(config["trial"], 0)}]
    )


def _gpus(device: str, has_gpu: bool) -> int:
    return 1 if device == "cuda" or (device == "auto" and has_gpu) else 0


def _tuner(trainable: Any, keys: list[str], storage: Path, name: str, workers: int | None) -> Any:
    from ray import tune

    return tune.Tuner(
        trainable,
        param_space={"trial": tune.grid_search(keys)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=workers or 0,
            reuse_actors=True,  # one process per worker slot: torch is imported once
            trial_dirname_creator=lambda trial: f"trial-{trial.config['trial']}",
        ),
        run_config=tune.RunConfig(
            storage_path=str(storage), name=name, verbose=0, callbacks=[progress_callback()()]
        ),
    )


def _fit(tuner: Any, tracker: Any) -> bool:
    """Run the experiment; False when Ctrl-C cut it short. Tune's own SIGINT handler is
    off (``_QUIET_ENV``): it ends a run as if it had finished, so an interrupt before any
    trial started looked like an empty success. The KeyboardInterrupt lands here instead;
    Tune's saved state lets the next run restore the experiment, and the trials' own folders
    keep every finished phase. Tune prints its tables on stdout: they go to stderr, so
    ``--json`` stays clean."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            tuner.fit()
    except KeyboardInterrupt:
        tracker.note("interrupted: stopping the Ray trials (running trials resume next time)")
        for key in sorted(tracker.running):
            tracker.stopped(key)
        return False
    return True


def ray_trainable(config: dict[str, Any], payloads: dict[str, Payload]) -> None:
    """One trial, in a Ray worker: run it and report its row; a failure raises."""
    from ray import tune

    data = payloads[config["trial"]]
    set_threads(int(data["threads"]))
    row = run_payload(data)
    tune.report({"row": json.dumps(row), "ok": row["status"] == "completed"})
    if row["status"] != "completed":
        raise TrialFailed(row["error"])


def progress_callback() -> Any:
    """The driver's Tune callback. Its class is made on first use (Ray Tune imports rich,
    which no engine module may load at import) and is reachable as this module's
    ``_Progress``, so the copy pickled with the experiment restores by reference."""
    cls = globals().get("_PROGRESS")
    if cls is None:
        from ray.tune import Callback

        cls = type("_Progress", (_ProgressMethods, Callback), {"__module__": __name__})
        globals()["_PROGRESS"] = cls
    return cls


def __getattr__(name: str) -> Any:
    if name == "_Progress":
        return progress_callback()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _ProgressMethods:
    """What the callback does: tell the driver's tracker when a trial starts and ends."""

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        tracker = _ACTIVE.get("tracker")
        if tracker is not None:
            _ACTIVE["seen"].add(trial.config["trial"])
            tracker.started(trial.config["trial"])

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if "row" in result:
            _ACTIVE.setdefault("rows", {})[trial.config["trial"]] = json.loads(result["row"])

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, "ray: the trial errored (see OUT/ray for its log)")

    def _ended(self, trial: Any, error: str = "") -> None:
        tracker = _ACTIVE.get("tracker")
        key = trial.config["trial"]
        if tracker is None:
            return
        row = _ACTIVE.get("rows", {}).pop(key, None)
        if row is not None:
            tracker.finished(row)
        else:
            tracker.failed(key, error or "ray: the trial ended without a result")


_QUIET_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",  # the old reporter: verbose=0 is silent
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no CSV/JSON/TensorBoard files per trial
    "RAY_DEDUP_LOGS": "0",
    "TUNE_DISABLE_SIGINT_HANDLER": "1",  # Ctrl-C raises KeyboardInterrupt (see _fit)
}
