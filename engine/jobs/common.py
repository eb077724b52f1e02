"""What every job shares: the device, the dataset, checkpoints, a summary for any outcome,
and the manifests of run folders.

A job is a function of a :class:`~engine.session.JobContext` that a session runs in its worker;
these helpers keep each job module down to what is its own.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from engine import progress
from engine.config import TrainConfig
from engine.data import DATASETS, LoadedData, default_data_dir, load_dataset, require_dataset
from engine.errors import ConfigError
from engine.events import Checkpoint
from engine.models import Architecture, check_model_name
from engine.runs import RunDir
from engine.session import JobContext, StopRequested
from engine.training import Diverged, LoopResult, TrainLoop


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present; asking for CUDA without one is an input error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here (use --device cpu)")
    if name not in {"cpu", "cuda"}:
        raise ConfigError(f"unknown device {name!r}; choose auto, cpu or cuda")
    return torch.device(name)


def check_config(config: TrainConfig, *, data: bool = True, train: bool = True) -> TrainConfig:
    """Dataset, model and device names, and (``data``) the dataset present offline: what a
    train config needs before a run folder is made for it (only its test split when the job
    never reads the training split: ``train`` False)."""
    if config.dataset != "auto":
        DATASETS.get(config.dataset)
    check_model_name(config.model)
    resolve_device(config.device)
    if data:
        require_dataset(
            config.dataset,
            Path(config.data_dir) if config.data_dir else default_data_dir(),
            train=train,
        )
    return config


def load_data(
    config: TrainConfig, ctx: JobContext, device: torch.device, *, train: bool = True
) -> LoadedData:
    """The configured dataset on ``device``; says which one and why (``train`` False: the
    test split only)."""
    with progress.reporting(ctx.log):  # a first render or resize takes seconds
        loaded = load_dataset(
            config.dataset,
            config.data_dir or None,
            device=device,
            train_size=config.train_size,
            test_size=config.test_size,
            train=train,
        )
    ctx.log(f"dataset: {loaded.reason}")
    return loaded


def checkpointer(
    run: RunDir, arch: Architecture, ctx: JobContext, steps_per_epoch: int
) -> Callable[[TrainLoop], str]:
    """The loop's ``on_checkpoint``: model + optimizer + position into ``run``."""

    def save(loop: TrainLoop) -> str:
        path = run.save_checkpoint(
            loop.model,
            arch,
            loop.optimizer,
            {"step": loop.step, "base_lr": loop.base_lr, "phase": loop.phase},
        )
        ctx.emit(Checkpoint(str(path), loop.step, round(loop.step / steps_per_epoch, 4)))
        return str(path)

    return save


@contextlib.contextmanager
def recording_outcome(
    run: RunDir | None,
    summary: dict[str, Any],
    on_stop: Callable[[], dict[str, Any]] | None = None,
) -> Iterator[None]:
    """A phase that is stopped or diverges still leaves a summary saying so; the exception
    goes on to the session. ``summary`` is read when it happens, so fill it in as you go."""
    try:
        yield
    except StopRequested:
        if run is not None:
            run.write_summary({**summary, "status": "stopped", **(on_stop() if on_stop else {})})
        raise
    except Diverged as exc:
        if run is not None:
            run.write_summary(
                {**summary, "status": "diverged", "steps": exc.step, "error": str(exc)}
            )
        raise


def run_loop(
    loop: TrainLoop,
    run: RunDir | None,
    summary: dict[str, Any],
    save: Callable[[TrainLoop], str] | None,
) -> LoopResult:
    """Run a loop; on Stop keep a checkpoint, on divergence record why, in the summary."""

    def on_stop() -> dict[str, Any]:
        if save is not None:
            save(loop)
        return {"steps": loop.step, "test_acc": loop.last_eval.get("test")}

    with recording_outcome(run, summary, on_stop):
        return loop.run()


def new_run_manifest(config: TrainConfig, command: str) -> dict[str, Any]:
    return {"command": command, "config": config.to_dict(), "seed": config.seed}


def derived_manifest(run_dir_in: Path, command: str, details: dict[str, Any]) -> dict[str, Any]:
    """Manifest of a run made from another: the source run's config (so the dataset reloads
    the same way), the source run (so the owner's key is found for refereeing), and
    ``details`` under the command's name."""
    manifest = RunDir.open(run_dir_in).manifest()
    return {
        "command": command,
        "config": manifest["config"],
        "seed": manifest.get("seed", manifest["config"].get("seed", 0)),
        "source_run": str(Path(run_dir_in).resolve()),
        command: details,
    }


def steps_per_epoch(train_images: int, batch_size: int) -> int:
    return -(-train_images // batch_size)
