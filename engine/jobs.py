"""Jobs a session runs. A job wires data, model, run directory and the one training loop.

``train_job`` is the owner's plain training (and, via ``resume``, its continuation); later
phases (embedding, attacks, scans) are jobs of the same shape.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from engine.config import TrainConfig
from engine.data import load_dataset
from engine.errors import ConfigError
from engine.events import Checkpoint, Phase
from engine.models import Architecture, build_model
from engine.runs import RunDir
from engine.session import Job, JobContext, StopRequested
from engine.training import Diverged, OptimSettings, Source, TrainLoop, clean_test_probe


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present; asking for CUDA without one is an input error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu)")
    if name not in {"cpu", "cuda"}:
        raise ConfigError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


@dataclasses.dataclass
class TrainState:
    """Where a run stands, for checkpoints and summaries."""

    config: TrainConfig
    arch: Architecture
    dataset_reason: str = ""
    started: float = dataclasses.field(default_factory=time.monotonic)


def train_job(config: TrainConfig, run: RunDir | None, *, resume: bool = False) -> Job:
    """Train ``config.model`` on ``config.dataset``, checkpointing into ``run`` every epoch."""

    def job(ctx: JobContext) -> dict[str, Any]:
        device = resolve_device(config.device)
        loaded = load_dataset(
            config.dataset, config.data_dir or None, device=device,
            train_size=config.train_size, test_size=config.test_size,
        )
        data = loaded.data
        ctx.log(f"dataset: {loaded.reason}")
        arch = Architecture(config.model, data.shape, data.num_classes)
        torch.manual_seed(config.seed)
        model = build_model(arch).to(device)
        start_step, optimizer_state, base_lr = 0, None, config.lr
        if resume and run is not None:
            model_state, optimizer_state, loop_state = run.load_checkpoint()
            model.load_state_dict(model_state)
            start_step, base_lr = int(loop_state["step"]), float(loop_state["base_lr"])
            ctx.log(f"resuming {run.path} from step {start_step}")
        steps_per_epoch = -(-len(data.train_x) // config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        if start_step >= total_steps:
            raise ConfigError(f"{run.path if run else 'run'} already finished ({start_step} steps)")

        def save(loop: TrainLoop) -> str:
            assert run is not None
            path = run.save_checkpoint(
                loop.model, arch, loop.optimizer,
                {"step": loop.step, "base_lr": loop.base_lr, "phase": loop.phase},
            )
            ctx.emit(Checkpoint(str(path), loop.step, round(loop.step / steps_per_epoch, 4)))
            return str(path)

        info = {
            "dataset": data.name, "dataset_reason": loaded.reason, "model": config.model,
            "device": str(device), "epochs": config.epochs, "steps": total_steps,
            "run": str(run.path) if run else "",
        }
        ctx.emit(Phase("train", "start", info=info))
        loop = TrainLoop(
            model,
            [Source("owner", data.train_x, config.batch_size, y=data.train_y)],
            OptimSettings.from_config(config),
            ctx=ctx, phase="train", total_steps=total_steps,
            probes=[clean_test_probe(data)], eval_every=config.eval_every, seed=config.seed,
            start_step=start_step, optimizer_state=optimizer_state,
            on_checkpoint=save if run is not None else None,
        )
        loop.base_lr = base_lr
        started = time.monotonic()
        summary: dict[str, Any] = {"dataset": data.name, "model": config.model, "device": str(device)}
        try:
            result = loop.run()
        except StopRequested:
            if run is not None:
                save(loop)
                run.write_summary({**summary, "status": "stopped", "steps": loop.step,
                                   "test_acc": loop.last_eval.get("test")})
            raise
        except Diverged as exc:
            if run is not None:
                run.write_summary({**summary, "status": "diverged", "steps": exc.step,
                                   "error": str(exc)})
            raise
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


def new_run_manifest(config: TrainConfig, command: str) -> dict[str, Any]:
    return {"command": command, "config": config.to_dict(), "seed": config.seed}


def config_from_run(path: Path) -> TrainConfig:
    run = RunDir.open(path)
    return TrainConfig.from_mapping(run.manifest()["config"])
