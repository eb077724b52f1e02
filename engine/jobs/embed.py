"""The ``embed`` job: train (from scratch, or on from another run's model) while embedding a
watermark, with mid-run key switches tracked by :class:`KeyTracker`."""

from __future__ import annotations

import dataclasses
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from engine import commands as cmd
from engine import progress
from engine.config import TrainConfig
from engine.data.meta import DatasetMeta, dataset_meta
from engine.deploy import unwrap
from engine.errors import ConfigError, RunError
from engine.events import Phase
from engine.jobs.api_watermark import serve_job, served_scheme
from engine.jobs.common import (
    check_config,
    checkpointer,
    load_data,
    new_run_manifest,
    recording_outcome,
    resolve_device,
    run_loop,
    steps_per_epoch,
)
from engine.jobs.datafree import check_source, datafree_job
from engine.jobs.followup import hold
from engine.jobs.key_tracker import KeyTracker, true_trigger_preview
from engine.jobs.referee import run_dataset
from engine.jobs.spec import CheckedJob, JobKind, JobSpec, loose, register_job_kind
from engine.jobs.verdicts import log_verdicts, verifying
from engine.metrics import Probe
from engine.models import Architecture, build_model
from engine.registry import Plugin
from engine.runs import KEY_DIR, RunDir
from engine.session import Job, JobContext
from engine.training import OptimSettings, Source, TrainLoop
from engine.watermarks import (
    SCHEMES,
    Key,
    KeyContext,
    Watermark,
    get_scheme,
    parse_scheme_params,
)
from engine.watermarks.base import needs_model_message


def widen_outputs(model: torch.nn.Module, arch: Architecture) -> torch.nn.Module:
    """A model rebuilt for ``arch`` with every weight copied; a classifier with fewer outputs
    (a clean K-class model starting a new-label embedding) keeps its K rows, the new class
    starts from the fresh initialisation."""
    target = build_model(arch).to(next(model.parameters()).device)
    fresh = target.state_dict()
    for name, value in model.state_dict().items():
        slot = fresh.get(name)
        if slot is None:
            raise RunError(f"--from model does not fit {arch.name}: unexpected {name}")
        if slot.shape == value.shape:
            fresh[name] = value
        elif slot.dim() == value.dim() and slot.shape[1:] == value.shape[1:]:
            fresh[name][: value.shape[0]] = value
        else:
            raise RunError(f"--from model does not fit {arch.name}: {name} {tuple(value.shape)}")
    target.load_state_dict(fresh)
    return target


def embed_job(
    config: TrainConfig,
    scheme_name: str,
    params: Any,
    run: RunDir | None,
    *,
    from_run: Path | None = None,
    alpha: float = 1e-3,
) -> Job:
    """Train (from scratch, or on from ``from_run``'s model) while embedding a watermark.

    Same shape as :func:`train_job` and the same loop; the scheme adds its key source and a
    retention probe. The key is generated and saved to ``RUN/key/`` before the first step,
    apart from the model; the summary carries the verification of every key.
    """
    scheme = get_scheme(scheme_name)

    def job(ctx: JobContext) -> dict[str, Any]:
        device = resolve_device(config.device)
        loaded = load_data(config, ctx, device)
        data = loaded.data
        k = data.num_classes
        arch = Architecture(config.model, data.shape, scheme.num_outputs(params, k))
        torch.manual_seed(config.seed)
        model = build_model(arch).to(device)
        if from_run is not None:
            base, base_arch = RunDir.open(from_run).load_model(device)
            base = unwrap(base)  # a served model's classifier: its transforms are not trained
            if base_arch.in_shape != arch.in_shape or base_arch.name != arch.name:
                raise ConfigError(
                    f"--from {from_run}: its model is {base_arch.name} on {base_arch.in_shape}, "
                    f"not {arch.name} on {arch.in_shape}"
                )
            model = widen_outputs(base, arch) if base_arch != arch else base
            ctx.log(f"starting from the model of {from_run}")
        kctx = KeyContext(
            data,
            config.model,
            config.seed,
            config.data_dir,
            ctx.log,
            trained_model=model if from_run is not None else None,
        )
        per_epoch = steps_per_epoch(len(data.train_x), config.batch_size)
        total_steps = config.epochs * per_epoch
        save = checkpointer(run, arch, ctx, per_epoch) if run is not None else None
        test = Probe("test", data.test_x, data.test_y, classes=k if arch.num_classes != k else None)
        summary: dict[str, Any] = {
            "dataset": data.name,
            "model": config.model,
            "device": str(device),
            "scheme": scheme_name,
        }
        attempts = 1 + (0 if from_run is not None else scheme.fresh_keys_allowed(params))
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            if attempt > 1:  # the stalled key was never embedded: a fresh start, a fresh key
                torch.manual_seed(config.seed + attempt - 1)
                model = build_model(arch).to(device)
                if run is not None:
                    shutil.rmtree(run.path / KEY_DIR)
            key = scheme.keygen(params, kctx)
            owner = Source("owner", data.train_x, config.batch_size, y=data.train_y)
            key_sources = scheme.training_sources(key, config.batch_size, device, data)
            # exp-weighting reads the weights through EW(w) while it embeds, then bakes them
            prepare = getattr(scheme, "prepare_model", None)
            finish = prepare(model, key, ctx.log) if prepare is not None else None
            tracker = KeyTracker(scheme, kctx, run, key, 1, config.batch_size)
            if run is not None:
                ctx.log(f"key saved to {tracker.folders['key']} (mode 0600, not in the model file)")
            info = {
                "scheme": scheme_name,
                "key": key.describe(),
                "dataset": data.name,
                "dataset_reason": loaded.reason,
                "model": config.model,
                "outputs": arch.num_classes,
                "device": str(device),
                "epochs": config.epochs,
                "steps": total_steps,
                "run": str(run.path) if run else "",
                "from": str(from_run or ""),
            }
            if attempt > 1:
                info["attempt"] = attempt
            ctx.emit(Phase("embed", "start", info=info))
            if attempt == 1:
                ctx.emit(true_trigger_preview(scheme.probe(key, data, "key", limit=1)))
            loop = TrainLoop(
                model,
                [owner, *key_sources],
                OptimSettings.from_config(config),
                ctx=ctx,
                phase="embed",
                total_steps=total_steps,
                probes=[test, *scheme.probes(key, data, "key")],
                amp=None if scheme.allows_amp else False,
                eval_every=config.eval_every,
                seed=config.seed,
                on_checkpoint=save,
                done=None if attempt == attempts else stall_check(scheme, key, per_epoch),
            )
            tracker.attach(loop, ctx)
            hold(ctx, loop.model, arch, run, "embed", lambda loop=loop: loop.step)
            try:
                result = run_loop(loop, run, summary, save)
            finally:
                ctx.off(cmd.SetTrigger, cmd.SetTargetLabel)
                if finish is not None:
                    finish()
            if loop.finished_early is None:
                break
            ctx.log(f"fresh start {attempt + 1} of {attempts}: the stalled key is discarded")
        summary["attempts"] = attempt
        summary |= {
            "test_acc": result.test_acc,
            "retention": result.retention,
            "keys": tracker.folders,
            "final_loss": result.loss,
            "steps": result.steps,
            "epochs": config.epochs,
        }
        with recording_outcome(run, summary):  # verifying every key set takes seconds
            verdicts: dict[str, dict[str, Any]] = {}
            tracked = tracker.tracked()
            for index, (name, key) in enumerate(tracked.items(), 1):
                ctx.log(verifying(index, len(tracked), name), progress.LEVEL)  # 8-21 s: say so
                verdicts[name] = scheme.verify(loop.model, key, data, alpha).to_dict()
        log_verdicts(ctx, verdicts, result.test_acc, k)
        summary |= {
            "status": "completed",
            "verify": verdicts["key"],
            "verdicts": verdicts,
            "seconds": round(time.monotonic() - started, 2),
        }
        if run is not None:
            run.write_summary(summary)
        ctx.emit(
            Phase("embed", "end", info={"test_acc": result.test_acc, "retention": result.retention})
        )
        return summary

    return job


def stall_check(
    scheme: Watermark, key: Key, per_epoch: int
) -> Callable[[int, dict[str, float]], str | None]:
    """The loop's ``done``: ends an attempt whose key the scheme says cannot be learnt."""
    return lambda step, scores: scheme.stalled(key, scores, step / per_epoch)


#: what ``--from`` carries over when the flags do not say otherwise
INHERITED = ("dataset", "model", "data_dir", "train_size", "test_size")


def embed_manifest(
    config: TrainConfig, scheme: str, params: Any, from_run: Path | None, command: str
) -> dict[str, Any]:
    """The one manifest of an embedding run (headless, playground or scenario phase)."""
    return new_run_manifest(config, command) | {
        "scheme": scheme,
        "scheme_params": dataclasses.asdict(params),
        "from": str(from_run or ""),
    }


@register_job_kind
class EmbedKind(JobKind):
    """Train while embedding a watermark; the key goes to RUN/key/ (0600), apart from the model."""

    name = "embed"
    title = "embed a watermark"
    plugin_key = "scheme"
    makes_model = True

    def plugins(self) -> list[Plugin[Any]]:
        return list(SCHEMES)

    def plugin(self, name: str) -> Plugin[Any]:
        return SCHEMES.get(name)

    def parse_params(self, plugin: str, values: Any) -> Any:
        return parse_scheme_params(plugin, loose(values))

    def check(self, spec: JobSpec, *, inputs: bool) -> CheckedJob:
        scheme = spec.plugin or "pattern"
        if spec.source is not None and self.plugin(scheme).factory.from_scratch_only:
            raise ConfigError(
                f"--from: {scheme} can only be embedded while a model first learns its task "
                "(its null embedding does not take hold in a trained model); train from scratch"
            )
        if spec.source is None and self.plugin(scheme).factory.needs_trained_model:
            raise ConfigError(needs_model_message(scheme))
        values = loose(spec.config)
        for name, value in self.plugin(scheme).factory.train_defaults.items():
            values.setdefault(name, value)  # the scheme's numerics, unless the user chose
        if spec.source is not None and inputs:
            base_run = RunDir.open(spec.source)
            base = base_run.manifest()["config"]
            for field in INHERITED:
                if field in base:
                    values.setdefault(field, base[field])
        config = TrainConfig.from_mapping(values)
        params = self.parse_params(scheme, spec.params)
        data_free = getattr(self.plugin(scheme).factory, "data_free", False)
        if data_free:
            check_source(spec.source, load=inputs)
        check_config(config, data=inputs, train=not data_free or params.adjust == "data")
        if spec.source is not None and inputs:
            base_arch = RunDir.open(spec.source).architecture()
            if base_arch.name != config.model:  # refused before --out exists
                raise ConfigError(
                    f"--from {spec.source}: its model is {base_arch.name}, not {config.model}"
                )
        manifest = embed_manifest(config, scheme, params, spec.source, spec.command or self.name)

        def make(run: RunDir | None) -> Job:
            if data_free:
                assert spec.source is not None
                return datafree_job(config, params, run, spec.source)
            if served_scheme(scheme):  # an API watermark: the model is served, not trained
                assert spec.source is not None
                return serve_job(config, scheme, params, run, spec.source)
            return embed_job(config, scheme, params, run, from_run=spec.source)

        return CheckedJob(
            spec, params=params, config=config, manifest=manifest | spec.manifest_extra, make=make
        )

    def dataset(self, spec: JobSpec, checked: CheckedJob) -> DatasetMeta | None:
        """The train config's dataset; a data-free embedding's is its input run's, of which
        only the test split is read (unless the adjustment uses real data)."""
        config, params = checked.config, checked.params
        if self.data_free(spec):
            assert spec.source is not None
            return run_dataset(RunDir.open(spec.source), train=params.adjust == "data")
        return dataset_meta(
            config.dataset,
            config.data_dir or None,
            train_size=config.train_size,
            test_size=config.test_size,
        )

    def check_data(self, spec: JobSpec, checked: CheckedJob, data: DatasetMeta) -> None:
        """The scheme's own limits; with ``--from``, a model that takes these images and
        has no more outputs than the embedding gives it."""
        scheme = get_scheme(spec.plugin or "pattern")
        if spec.source is not None and not self.data_free(spec):
            base = RunDir.open(spec.source).architecture()
            outputs = scheme.num_outputs(checked.params, data.classes)
            if tuple(base.in_shape) != data.shape or base.num_classes > outputs:
                raise ConfigError(
                    f"--from {spec.source}: its model takes {shape_text(base.in_shape)} images "
                    f"into {base.num_classes} outputs; {data.name} has {shape_text(data.shape)} "
                    f"images and {data.classes} classes ({outputs} outputs with this scheme)"
                )
        given = spec.params if isinstance(spec.params, Mapping) else {}
        scheme.check_data(checked.params, data, given)
        if hasattr(scheme, "check_model"):  # white-box schemes: their layer exists in it
            outputs = scheme.num_outputs(checked.params, data.classes)
            scheme.check_model(checked.params, checked.config.model, data.shape, outputs)

    def data_free(self, spec: JobSpec) -> bool:
        return bool(getattr(self.plugin(spec.plugin or "pattern").factory, "data_free", False))


def shape_text(shape: Sequence[int]) -> str:
    """(C, H, W) as a person reads it: ``28x28 grey``, ``32x32 RGB``, ``16x16 5-channel``."""
    channels, height, width = shape
    kind = {1: "grey", 3: "RGB"}.get(channels, f"{channels}-channel")
    return f"{height}x{width} {kind}"
