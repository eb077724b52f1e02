"""Jobs: what a session runs, described once by a :class:`JobSpec` and checked once.

This package is the engine's public Python API::

    from engine.jobs import JobSpec, run
    clean = run(JobSpec.train(dataset="synthetic", epochs=2, out="runs/clean"))
    wm = run(JobSpec.embed("pattern", trigger="square", target_label=3, from_run=clean,
                           out="runs/wm"))
    hit = run(JobSpec.attack("ft-basic", run=wm, data_fraction=0.2, epochs=5, out="runs/ftb"))
    print(hit.summary["after"]["retention"])

Importing it registers every job kind (one module each) and every plugin they use.
"""

from __future__ import annotations

from engine.errors import ConfigError, DataError, RunError, UserError
from engine.jobs import attack as _attack  # noqa: F401  (registers the job kinds)
from engine.jobs import detect as _detect  # noqa: F401
from engine.jobs import embed as _embed  # noqa: F401
from engine.jobs import fresh_keys as _fresh_keys  # noqa: F401
from engine.jobs import overwriting as _overwriting  # noqa: F401  (registers it)
from engine.jobs import piracy as _piracy  # noqa: F401  (registers the piracy attack)
from engine.jobs import threshold as _threshold  # noqa: F401
from engine.jobs import train as _train  # noqa: F401
from engine.jobs import verify as _verify  # noqa: F401
from engine.jobs.api import JobFailed, Result, Running, run, start
from engine.jobs.attack import attack_manifest, check_attack
from engine.jobs.common import new_run_manifest, resolve_device
from engine.jobs.detect import check_detect, detect_manifest
from engine.jobs.embed import embed_job
from engine.jobs.spec import JOB_KINDS, BuiltJob, CheckedJob, JobKind, JobSpec
from engine.jobs.train import train_job
from engine.jobs.verify import verify_run
from engine.plugins import load_plugins
from engine.runs import KEY_DIR

# other packages' schemes, attacks, models and datasets: once, after every built-in above
load_plugins()

__all__ = [
    "JOB_KINDS",
    "KEY_DIR",
    "BuiltJob",
    "CheckedJob",
    "ConfigError",
    "DataError",
    "JobFailed",
    "JobKind",
    "JobSpec",
    "Result",
    "RunError",
    "Running",
    "UserError",
    "attack_manifest",
    "check_attack",
    "check_detect",
    "detect_manifest",
    "embed_job",
    "new_run_manifest",
    "resolve_device",
    "run",
    "start",
    "train_job",
    "verify_run",
]
