"""The ``fresh-keys`` job: keys nobody embedded, verified against a run's model.

Ownership evidence is only as good as its false-positive rate: a key its owner never trained
must fail against any model, the watermarked one included. The job draws ``count`` fresh keys
of a scheme (the secrets a default key would share with the owner's, such as the trigger's
content and the target label, drawn anew), verifies each on the model exactly as
``wmtui verify`` does, and reports how many verified (it should be none) and the smallest
p-value. A scenario or recipe phase (``kind = "fresh-keys"``, ``on`` the model's phase) or
``JobSpec("fresh-keys", params={"count": 100}, source=run)`` runs it.
"""

from __future__ import annotations

import dataclasses
import random
import time
from typing import Any

from engine import stopping
from engine.config import TrainConfig
from engine.data import load_dataset
from engine.errors import ConfigError
from engine.events import Log
from engine.jobs.common import resolve_device
from engine.jobs.spec import CheckedJob, JobKind, JobSpec, loose, register_job_kind
from engine.registry import param, parse_params
from engine.runs import KEY_DIR, RunDir
from engine.session import Job, JobContext
from engine.watermarks import SCHEMES, KeyContext, get_scheme, load_key, parse_scheme_params


@dataclasses.dataclass(frozen=True)
class FreshKeysParams:
    scheme: str = param("", "scheme of the fresh keys ('': that of the run's own key)")
    count: int = param(100, "fresh keys to draw and verify", low=1, high=10_000)
    test_images: int = param(2000, "test images each key is verified on (0: all)", low=0)
    alpha: float = param(
        1e-3, "significance of each verdict", low=0.0, high=1.0, low_open=True, high_open=True
    )
    seed: int = param(10_000, "first fresh key's seed (key i uses seed + i)", low=0)


def fresh_values(scheme: str, index: int, num_classes: int) -> dict[str, Any]:
    """A fresh key's secrets where a default key would share them with the owner's: a pattern
    key's trigger (seeded noise instead of the default TEST word) and a target label drawn at
    random; other schemes' secrets are drawn from the key's seed already."""
    rng = random.Random(index)
    if scheme == "pattern":
        return {"trigger": "noise", "target_label": rng.randrange(num_classes)}
    if scheme == "unrelated":
        return {"target_label": rng.randrange(num_classes)}
    return {}


def fresh_keys_job(run: RunDir, scheme_name: str, p: FreshKeysParams, device: str) -> Job:
    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        config = TrainConfig.from_mapping(run.manifest()["config"])
        dev = resolve_device(device)
        model, arch = run.load_model(dev)
        data = load_dataset(
            config.dataset, config.data_dir or None, device=dev, test_size=config.test_size
        ).data
        queried = data.limit(0, p.test_images) if p.test_images else data
        scheme = get_scheme(scheme_name)
        verified, lowest = 0, 0.0
        ctx.log(f"fresh-keys: {p.count} fresh {scheme_name} keys against {run.path}")
        for i in range(p.count):
            stopping.check()
            values = fresh_values(scheme_name, i, data.num_classes)
            params = parse_scheme_params(scheme_name, values)
            key = scheme.keygen(params, KeyContext(data, arch.name, p.seed + i))
            verdict = scheme.verify(model, key, queried, p.alpha, test_acc=False)
            verified += verdict.verified
            lowest = min(lowest, verdict.log10_p_value)
            if (i + 1) % 10 == 0 or i + 1 == p.count:
                ctx.emit(Log(f"fresh keys {i + 1}/{p.count}: {verified} verified"))
        summary = {
            "scheme": scheme_name,
            "source_run": str(run.path),
            "fresh": p.count,
            "verified": verified,
            "rate": verified / p.count,
            "min_log10_p": lowest,
            "alpha": p.alpha,
            "status": "completed",
            "seconds": round(time.monotonic() - started, 2),
        }
        ctx.log(f"fresh-keys: {verified} of {p.count} verified (smallest log10 p {lowest:.1f})")
        return summary

    return job


@register_job_kind
class FreshKeysKind(JobKind):
    """False positives: fresh keys of a scheme verified against a run's model."""

    name = "fresh-keys"
    title = "verify fresh keys (false positives)"

    def params_type(self, plugin: str) -> type | None:
        return FreshKeysParams

    def parse_params(self, plugin: str, values: Any) -> Any:
        if isinstance(values, FreshKeysParams):
            return values
        params = parse_params(FreshKeysParams, loose(values))
        if params.scheme and params.scheme not in SCHEMES:
            SCHEMES.get(params.scheme)  # the unknown-name line with its suggestion
        return params

    def check(self, spec: JobSpec, *, inputs: bool) -> CheckedJob:
        params = self.parse_params("", spec.params)
        if loose(spec.budget) and any(loose(spec.budget).values()):
            raise ConfigError("fresh-keys takes no attacker budget")
        if not inputs:
            return CheckedJob(spec, params=params)
        if spec.source is None:
            raise ConfigError("fresh-keys needs the run whose model is queried")
        run = RunDir.open(spec.source)
        scheme = params.scheme
        if not scheme:
            if not (run.path / KEY_DIR).is_dir():
                raise ConfigError(f"{run.path} has no key: name the scheme (scheme = ...)")
            scheme = load_key(run.path / KEY_DIR).scheme
        manifest = {
            "command": spec.command or self.name,
            "source_run": str(run.path),
            "config": run.manifest()["config"],
            "params": dataclasses.asdict(params) | {"scheme": scheme},
        }

        def make(out: RunDir | None) -> Job:
            job = fresh_keys_job(run, scheme, params, spec.device)
            if out is None:
                return job

            def recorded(ctx: JobContext) -> dict[str, Any]:
                summary = job(ctx)
                out.write_summary(summary)
                return summary

            return recorded

        return CheckedJob(spec, params=params, manifest=manifest, make=make)
