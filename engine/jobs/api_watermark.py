"""An API-level watermark (DAWN, :mod:`engine.watermarks.dawn`) in the jobs: served by the
embed job, and handed to the thief's run by the referee.

Embedding such a scheme trains nothing, so it is not the embed loop: :func:`serve_job` loads
the ``--from`` model, makes the key (saved first, 0600), and saves the model behind the
scheme's answer filter. Refereeing an extraction attack on a served run,
:func:`recording_thief` keeps what the attack asks the API (the referee's own measurements
stay out), and :func:`thief_marks` turns what the API answered wrongly into the owner's key
for that thief: ``OUT/key``, the retention probe the attack is judged on, and the model the
thief ends with, which never carries the owner's filter (its secret is the owner's).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

from torch import nn

from engine.attacks.registry import ATTACKS, EXTRACTION, AttackResult
from engine.config import TrainConfig
from engine.data.base import ImageSet
from engine.deploy import Deployed, unwrap
from engine.events import Phase
from engine.filters.dawn import DawnFilter, query_logs, recording
from engine.jobs.common import load_data, recording_outcome, resolve_device
from engine.jobs.referee import key_run
from engine.jobs.verdicts import log_verdicts
from engine.metrics import Probe, accuracy
from engine.runs import KEY_DIR, RunDir
from engine.session import Job, JobContext
from engine.watermarks import KeyContext, get_scheme, load_key, save_key
from engine.watermarks.dawn import Dawn


def serve_job(
    config: TrainConfig,
    scheme_name: str,
    params: Any,
    run: RunDir | None,
    from_run: Path,
    alpha: float = 1e-3,
) -> Job:
    """Serve ``from_run``'s model behind the scheme's answer filter; no training step."""
    scheme = get_scheme(scheme_name)
    assert isinstance(scheme, Dawn)

    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        device = resolve_device(config.device)
        data = load_data(config, ctx, device, train=False).data  # keys come from the test set
        loaded, arch = RunDir.open(from_run).load_model(device)
        model = unwrap(loaded)  # as embed --from: the classifier, served afresh
        summary: dict[str, Any] = {
            "dataset": data.name,
            "model": arch.name,
            "device": str(device),
            "scheme": scheme_name,
        }
        ctx.emit(Phase("embed", "start", info={**summary, "from": str(from_run), "steps": 0}))
        with recording_outcome(run, summary):
            kctx = KeyContext(data, arch.name, config.seed, log=ctx.log, trained_model=model)
            key = scheme.keygen(params, kctx)
            keys: dict[str, str] = {}
            if run is not None:  # the secret first: a deploy.json naming dawn finds it
                keys["key"] = str(save_key(run.path / KEY_DIR, key))
                ctx.log(f"key saved to {keys['key']} (mode 0600, not in the model file)")
            served = scheme.serve(model, key)
            if run is not None:
                run.save_model(served, arch)
            test_acc = accuracy(served, Probe("test", data.test_x, data.test_y))
            verdicts: dict[str, dict[str, Any]] = {}
            if len(key.tensors["y"]):
                verdicts["key"] = scheme.verify(served, key, data, alpha, test_acc=False).to_dict()
            else:
                ctx.log("dawn: at this rate the API answers no test image wrongly", "warning")
        log_verdicts(ctx, verdicts, test_acc, data.num_classes)
        retention = {name: verdict["retention"] for name, verdict in verdicts.items()}
        summary |= {
            "status": "completed",
            "test_acc": test_acc,
            "retention": retention,
            "keys": keys,
            "steps": 0,
            "epochs": 0,
            "served": served.describe(),
            "verify": verdicts.get("key"),
            "verdicts": verdicts,
            "seconds": round(time.monotonic() - started, 2),
        }
        if run is not None:
            run.write_summary(summary)
        ctx.emit(Phase("embed", "end", info={"test_acc": test_acc, "retention": retention}))
        return summary

    return job


def recording_thief(model: nn.Module, attack_name: str) -> contextlib.AbstractContextManager[Any]:
    """Inside the block, the API filters of ``model`` keep what an extraction attack asks
    them (a white-box attack holds the weights, not the API: nothing is kept)."""
    if ATTACKS.get(attack_name).family != EXTRACTION:
        return contextlib.nullcontext()
    return recording(model)


def thief_marks(
    ctx: JobContext,
    suspect: nn.Module,
    result: AttackResult,
    probes: list[Probe],
    data: ImageSet,
    run_dir: Path,
    out_run: RunDir | None,
) -> AttackResult:
    """The attack's result without the owner's API filter; where the API answered some of the
    thief's queries wrongly, they become the ``key`` probe and ``OUT/key``."""
    logs = query_logs(suspect)
    if not logs:
        return result
    model = without_api(result.model)
    images, labels = logs[0].remembered()
    owner = key_run(run_dir)
    if len(labels) == 0 or owner is None:
        ctx.log("dawn: the API remembers no wrong answer to this attack; the key stays its own")
        return dataclasses.replace(result, model=model)
    scheme = get_scheme("dawn")
    assert isinstance(scheme, Dawn)
    key = scheme.thief_key(load_key(owner / KEY_DIR), images, labels)
    probes[:] = [p for p in probes if p.name != KEY_DIR] + scheme.probes(key, data, KEY_DIR)
    where = "the stolen run"
    if out_run is not None:
        where = str(save_key(out_run.path / KEY_DIR, key))
    ctx.log(f"dawn: the API answered {len(labels)} of the thief's queries wrongly: {where}")
    return dataclasses.replace(result, model=model)


def without_api(model: nn.Module) -> nn.Module:
    """``model`` without DAWN filters (the thief cannot run the owner's secret)."""
    if not isinstance(model, Deployed):
        return model
    kept = [f for f in model.filters if not isinstance(f, DawnFilter)]
    if not kept and not model.transforms:
        return model.inner
    return Deployed(model.inner, model.transforms, kept)


def served_scheme(scheme: str) -> bool:
    """Whether embedding ``scheme`` serves a model instead of training one."""
    return bool(getattr(get_scheme(scheme), "served", False))
