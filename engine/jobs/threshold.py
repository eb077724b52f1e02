"""The ``threshold`` job: the SoK's decision threshold from null models.

Lukas et al. (SoK, IEEE S&P 2022) decide "watermark removed" with one rule for every scheme:
a model whose key accuracy is at or below a threshold counts as unmarked. The threshold
comes from null models (trained like the owner's, without the watermark) and WRT's
``decision_threshold.py``: the (1 - p) quantile of a normal fitted to their key accuracies
(:func:`engine.metrics.decision_threshold`). This job trains (or reuses) K null models with
the one ``train`` job, measures a fresh key of the scheme on each, and keeps the result as a
:class:`ThresholdRecord` in a cache, one per (dataset, architecture, scheme, key size):
:func:`find_threshold` is how verify, attacks and reports read it.

The cache root is ``$WMTUI_CACHE_DIR/thresholds``, else the platform cache directory's
``thresholds``: records under ``records/DATASET/ARCH/SCHEME-kN.json`` (the latest computation
wins), null models under ``null-models/``, keyed by their train config, so a second scheme
or a second run reuses them.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from engine.config import TrainConfig
from engine.data.base import ImageSet
from engine.errors import ConfigError, UserError
from engine.events import Phase
from engine.io import atomic_write_json, read_json
from engine.jobs.common import check_config, load_data, resolve_device
from engine.jobs.null_models import (
    COUNT_PARAM,
    judge_run,
    key_accuracy,
    measure_nulls,
    null_model_runs,
    slug,
)
from engine.jobs.spec import CheckedJob, JobKind, JobSpec, loose, register_job_kind
from engine.metrics import Verdict, decision_threshold
from engine.models import check_model_name
from engine.registry import param, parse_params
from engine.runs import KEY_DIR, RunDir
from engine.session import Job, JobContext
from engine.watermarks import SCHEMES, Key, load_key
from engine.watermarks.white_box import is_white_box

CACHE_ENV = "WMTUI_CACHE_DIR"


def cache_root() -> Path:
    """Where thresholds and null models are kept: ``$WMTUI_CACHE_DIR/thresholds``, else the
    platform cache directory's (null models take minutes to train: worth keeping)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env) / "thresholds"
    import platformdirs

    return Path(platformdirs.user_cache_dir("wmtui")) / "thresholds"


def key_size_of(scheme: str, params: Mapping[str, Any]) -> int:
    """A key's size as records are keyed: the image count of schemes whose key is a set of
    images (abstract, unrelated, datafree); 0 for schemes verified on every held-out key
    sample (pattern, newlabel, dual: their size follows the test set)."""
    field = COUNT_PARAM.get(scheme)
    return int(params[field]) if field and field in params else 0


@dataclasses.dataclass
class ThresholdRecord:
    """A computed threshold and what it rests on. ``threshold``: key accuracy at or below
    which a model counts as unmarked, at significance ``p``; ``null_key_acc``: one key
    accuracy per (null model, key); ``samples``: key samples each was measured on."""

    threshold: float
    p: float
    null_models: int
    null_key_acc: list[float]
    null_test_acc_mean: float
    dataset: str = ""
    arch: str = ""
    scheme: str = ""
    key_size: int = 0
    keys: int = 1
    samples: int = 0
    estimator: str = "normal"
    seeds: list[int] = dataclasses.field(default_factory=list)
    null_archs: list[str] = dataclasses.field(default_factory=list)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> ThresholdRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})


def record_path(
    dataset: str, arch: str, scheme: str, key_size: int, cache: Path | None = None
) -> Path:
    root = cache if cache is not None else cache_root()
    return root / "records" / slug(dataset) / slug(arch) / f"{slug(scheme)}-k{int(key_size)}.json"


def find_threshold(
    dataset: str, arch: str, scheme: str, key_size: int, *, cache: Path | None = None
) -> ThresholdRecord | None:
    """The cached threshold of (dataset, arch, scheme, key size); None when none was computed
    (or the file is unreadable: a broken cache entry reads as none, never as a verdict)."""
    path = record_path(dataset, arch, scheme, key_size, cache)
    if not path.is_file():
        return None
    try:
        return ThresholdRecord.from_dict(read_json(path, "threshold record"))
    except (UserError, TypeError, ValueError, AttributeError):
        return None


def save_record(record: ThresholdRecord, cache: Path | None = None) -> Path:
    path = record_path(record.dataset, record.arch, record.scheme, record.key_size, cache)
    atomic_write_json(path, record.to_dict())
    return path


def threshold_hint(dataset: str, arch: str, scheme: str, key_size: int) -> str:
    """The command that computes a missing threshold (what verify and reports print)."""
    size = f" --key-size {key_size}" if key_size else ""
    return f"wmtui threshold --scheme {scheme} --dataset {dataset} --model {arch}{size}"


@dataclasses.dataclass(frozen=True)
class ThresholdParams:
    scheme: str = param("", "scheme measured ('': that of the input run's key)")
    null_models: int = param(5, "unmarked models trained or reused (K)", low=2, high=100)
    p: float = param(
        0.05,
        "significance: a clean model lands above the threshold this often",
        low=0.0,
        high=1.0,
        low_open=True,
        high_open=True,
    )
    key_size: int = param(
        0, "key images (abstract, unrelated, datafree; 0: the scheme's default) or queries", low=0
    )
    keys: int = param(1, "fresh keys measured on every null model", low=1, high=100)
    null_seed: int = param(
        100, "first null model's seed (model i: null_seed + i)", low=0, high=2**31
    )
    null_arch: str = param("", "null-model architectures, comma-separated ('': the model's)")
    cache: str = param("", "cache folder ('': $WMTUI_CACHE_DIR, else the platform's)")

    def archs(self, own: str) -> list[str]:
        return [a.strip() for a in self.null_arch.split(",") if a.strip()] or [own]

    def cache_dir(self) -> Path:
        return Path(self.cache).expanduser() / "thresholds" if self.cache else cache_root()


def parse_threshold_params(values: Any) -> ThresholdParams:
    """Params with the names checked: an unknown scheme or architecture is one line with the
    closest name."""
    params = (
        values
        if isinstance(values, ThresholdParams)
        else parse_params(ThresholdParams, loose(values))
    )
    if params.scheme:
        SCHEMES.get(params.scheme)
    for arch in params.archs("lenet5"):
        check_model_name(arch)
    if params.null_arch and not params.archs(""):
        raise ConfigError("--null-arch names no architecture")
    return params


def threshold_job(
    config: TrainConfig, scheme: str, params: ThresholdParams, source: RunDir | None
) -> Job:
    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        device = resolve_device(config.device)
        cache = params.cache_dir()
        seeds = [params.null_seed + i for i in range(params.null_models)]
        runs, trained = null_model_runs(config, seeds, params.archs(config.model), cache, ctx)
        loaded = load_data(config, ctx, device)
        data = loaded.data
        ctx.emit(Phase("threshold", "start", info={"scheme": scheme, "dataset": data.name}))
        accs, tests, samples = measure_nulls(
            runs, scheme, params.keys, params.key_size, data, config, device, ctx
        )
        record = ThresholdRecord(
            threshold=decision_threshold(accs, params.p, key_size=samples),
            p=params.p,
            null_models=len(runs),
            null_key_acc=[round(a, 6) for a in accs],
            null_test_acc_mean=round(sum(tests) / len(tests), 6),
            dataset=data.name,
            arch=config.model,
            scheme=scheme,
            key_size=params.key_size,
            keys=params.keys,
            samples=samples,
            estimator="normal" if len(set(accs)) > 1 else "binomial (null accuracies all equal)",
            seeds=seeds,
            null_archs=params.archs(config.model),
            config=config.to_dict(),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        path = save_record(record, cache)
        ctx.log(
            f"threshold {scheme}: {100 * record.threshold:.2f}% key accuracy at p {params.p:g} "
            f"from {len(accs)} null accuracies; cached at {path}"
        )
        summary: dict[str, Any] = {
            "status": "completed",
            "scheme": scheme,
            "threshold": record.threshold,
            "record": record.to_dict(),
            "cached_at": str(path),
            "null_models_trained": trained,
            "null_models_reused": len(runs) - trained,
            "null_model_runs": [str(r.path) for r in runs],
        }
        if source is not None:
            summary |= judge_run(source, scheme, params.key_size, record.threshold, data, device)
        summary["seconds"] = round(time.monotonic() - started, 2)
        ctx.emit(Phase("threshold", "end", info={"threshold": record.threshold}))
        return summary

    return job


def white_box_job(
    config: TrainConfig, scheme: str, params: ThresholdParams, source: RunDir | None
) -> Job:
    """A white-box mark has no key samples to query, so no null model can score it: it is
    judged by its BER's p-value under random weights (``verify --white-box``). The phase
    completes saying so, so that a recipe over every scheme (``sok``) runs its attacks."""

    def job(ctx: JobContext) -> dict[str, Any]:
        why = f"{scheme} is read from the model, not queried: judged by its BER, no threshold"
        ctx.log(f"threshold {scheme}: {why}")
        return {
            "status": "completed",
            "scheme": scheme,
            "threshold": None,
            "rule": "white-box",
            "why": why,
            "seconds": 0.0,
        }

    return job


def _default_params(scheme: str) -> dict[str, Any]:
    factory = SCHEMES.get(scheme).factory
    return {f.name: f.default for f in dataclasses.fields(factory.Params)}


@register_job_kind
class ThresholdKind(JobKind):
    """The SoK's decision threshold of a scheme, from null models (cached)."""

    name = "threshold"
    title = "decision threshold from null models"

    def params_type(self, plugin: str) -> type | None:
        return ThresholdParams

    def parse_params(self, plugin: str, values: Any) -> Any:
        return parse_threshold_params(values)

    def check(self, spec: JobSpec, *, inputs: bool) -> CheckedJob:
        params = parse_threshold_params(spec.params)
        if any(loose(spec.budget).values()):
            raise ConfigError("threshold takes no attacker budget")
        if not inputs:
            return CheckedJob(spec, params=params)  # a scenario phase: its run comes later
        source = RunDir.open(spec.source) if spec.source is not None else None
        values = source.manifest()["config"] if source is not None else {}
        config = TrainConfig.from_mapping({**values, **loose(spec.config)})
        if spec.device != "auto":
            config = config.replace(device=spec.device)
        check_config(config, data=inputs)
        own = None
        if source is not None and (source.path / KEY_DIR).is_dir():
            own = load_key(source.path / KEY_DIR)
        scheme = params.scheme or (own.scheme if own is not None else "")
        if not scheme:
            raise ConfigError("threshold needs a scheme (--scheme NAME)")
        if not params.key_size:  # the input run's key size, else the scheme's default
            given = own.params if own is not None and own.scheme == scheme else {}
            size = key_size_of(scheme, given or _default_params(scheme))
            params = dataclasses.replace(params, key_size=size)
        manifest = {
            "command": spec.command or self.name,
            "config": config.to_dict(),
            "params": dataclasses.asdict(params) | {"scheme": scheme},
        } | ({"source_run": str(source.path)} if source is not None else {})

        def make(out: RunDir | None) -> Job:
            white_box = is_white_box(SCHEMES.get(scheme).factory)
            job = (white_box_job if white_box else threshold_job)(config, scheme, params, source)
            if out is None:
                return job

            def recorded(ctx: JobContext) -> dict[str, Any]:
                summary = job(ctx)
                out.write_summary(summary)
                return summary

            return recorded

        return CheckedJob(spec, params=params, config=config, manifest=manifest, make=make)


def threshold_verdict(
    model: nn.Module, key: Key | None, data: ImageSet, arch: str, scheme: str, verdict: Verdict
) -> dict[str, Any]:
    """The SoK's verdict beside verify's own: the key accuracy against the cached threshold
    of (dataset, arch, scheme, key size), ``threshold_verified`` None with the command that
    computes it when none is cached. Named ``sok_threshold``: a dual verdict's ``threshold``
    is the scheme's own T."""
    size = key_size_of(scheme, key.params if key is not None else {})
    record = find_threshold(data.name, arch, scheme, size)
    if record is None:
        return {
            "sok_threshold": None,
            "threshold_verified": None,
            "threshold_source": "",
            "threshold_hint": "no decision threshold computed for this (dataset, model, "
            f"scheme, key size): {threshold_hint(data.name, arch, scheme, size)}",
        }
    if key is not None:
        acc = key_accuracy(model, key, data, size)[0]
    else:  # a dual claim without its key: the true-key accuracy verify measured
        acc = verdict.true_acc if verdict.true_acc is not None else verdict.retention
    return {
        "sok_threshold": record.threshold,
        "threshold_verified": acc > record.threshold,
        "threshold_key_acc": acc,
        "threshold_source": f"{record_path(data.name, arch, scheme, size)} (p {record.p:g}, "
        f"{record.null_models} null models)",
    }
