"""The ``train`` job: the owner's plain training, and (``resume``) its continuation."""

from __future__ import annotations

import time
from typing import Any

import torch

from engine.config import TrainConfig
from engine.errors import ConfigError
from engine.events import Phase
from engine.jobs.common import (
    check_config,
    checkpointer,
    load_data,
    new_run_manifest,
    resolve_device,
    run_loop,
    steps_per_epoch,
)
from engine.jobs.followup import hold
from engine.jobs.spec import CheckedJob, JobKind, JobSpec, loose, register_job_kind
from engine.models import Architecture, build_model
from engine.runs import SUMMARY, RunDir
from engine.session import Job, JobContext
from engine.training import OptimSettings, Source, TrainLoop, clean_test_probe


def train_job(config: TrainConfig, run: RunDir | None, *, resume: bool = False) -> Job:
    """Train ``config.model`` on ``config.dataset``, checkpointing into ``run`` every epoch."""

    def job(ctx: JobContext) -> dict[str, Any]:
        device = resolve_device(config.device)
        loaded = load_data(config, ctx, device)
        data = loaded.data
        arch = Architecture(config.model, data.shape, data.num_classes)
        torch.manual_seed(config.seed)
        model = build_model(arch).to(device)
        start_step, optimizer_state, base_lr = 0, None, config.lr
        if resume and run is not None and not run.has_checkpoint():
            ctx.log(f"{run.path} was stopped before its first checkpoint: starting from the start")
        elif resume and run is not None:
            model_state, optimizer_state, loop_state = run.load_checkpoint()
            model.load_state_dict(model_state)
            start_step, base_lr = int(loop_state["step"]), float(loop_state["base_lr"])
            ctx.log(f"resuming {run.path} from step {start_step}")
        per_epoch = steps_per_epoch(len(data.train_x), config.batch_size)
        total_steps = config.epochs * per_epoch
        if start_step >= total_steps:
            raise ConfigError(f"{run.path if run else 'run'} already finished ({start_step} steps)")
        save = checkpointer(run, arch, ctx, per_epoch) if run is not None else None
        info = {
            "dataset": data.name,
            "dataset_reason": loaded.reason,
            "model": config.model,
            "device": str(device),
            "epochs": config.epochs,
            "steps": total_steps,
            "run": str(run.path) if run else "",
        }
        ctx.emit(Phase("train", "start", info=info))
        loop = TrainLoop(
            model,
            [Source("owner", data.train_x, config.batch_size, y=data.train_y)],
            OptimSettings.from_config(config),
            ctx=ctx,
            phase="train",
            total_steps=total_steps,
            probes=[clean_test_probe(data)],
            eval_every=config.eval_every,
            seed=config.seed,
            start_step=start_step,
            optimizer_state=optimizer_state,
            on_checkpoint=save,
        )
        loop.base_lr = base_lr
        hold(ctx, loop.model, arch, run, "train", lambda: loop.step)
        started = time.monotonic()
        summary: dict[str, Any] = {
            "dataset": data.name,
            "model": config.model,
            "device": str(device),
        }
        result = run_loop(loop, run, summary, save)
        summary |= {
            "status": "completed",
            "test_acc": result.test_acc,
            "final_loss": result.loss,
            "steps": result.steps,
            "epochs": config.epochs,
            "seconds": round(time.monotonic() - started, 2),
        }
        if run is not None:
            run.write_summary(summary)
        ctx.emit(Phase("train", "end", info={"test_acc": result.test_acc}))
        return summary

    return job


def check_not_finished(run: RunDir, config: TrainConfig, epochs_before: int) -> None:
    """A completed run resumes only to more epochs: refusing here, before anything is
    written, keeps its summary (a refusal at run time wrote "failed" over "completed")."""
    if not (run.path / SUMMARY).is_file():
        return
    if run.summary().get("status") == "completed" and config.epochs <= epochs_before:
        raise ConfigError(
            f"{run.path} already completed its {epochs_before} epochs; "
            f"give --epochs N above {epochs_before} to train further"
        )


@register_job_kind
class TrainKind(JobKind):
    """Train a clean model (or, with ``resume``, continue one from its last checkpoint)."""

    name = "train"
    title = "train a clean model"
    makes_model = True

    def check(self, spec: JobSpec, *, inputs: bool) -> CheckedJob:
        if spec.resume:
            if spec.out is None:
                raise ConfigError("resume needs the run folder to continue")
            run = RunDir.open(spec.out)
            manifest = run.manifest()
            config = TrainConfig.from_mapping({**manifest["config"], **loose(spec.config)})
            check_not_finished(run, config, int(manifest["config"].get("epochs", 0)))
            manifest = {**manifest, "config": config.to_dict()}
        else:
            config = TrainConfig.from_mapping(loose(spec.config))
            manifest = new_run_manifest(config, spec.command or self.name) | spec.manifest_extra
        check_config(config, data=inputs)
        return CheckedJob(
            spec,
            config=config,
            manifest=manifest,
            make=lambda run: train_job(config, run, resume=spec.resume),
        )
