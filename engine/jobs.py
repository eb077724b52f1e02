"""Jobs a session runs. A job wires data, model, run directory and the one training loop.

``train_job`` is the owner's plain training (and, via ``resume``, its continuation); later
phases (embedding, attacks, scans) are jobs of the same shape.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from engine import commands as cmd
from engine.config import TrainConfig
from engine.data import LoadedData, load_dataset
from engine.data.base import as_float
from engine.errors import ConfigError, RunError
from engine.events import Checkpoint, Phase, TriggerPreview
from engine.metrics import Probe
from engine.models import Architecture, build_model
from engine.runs import RunDir
from engine.session import Job, JobContext, StopRequested
from engine.training import (
    Diverged,
    LoopResult,
    OptimSettings,
    Source,
    TrainLoop,
    clean_test_probe,
)
from engine.watermarks import (
    Key,
    KeyContext,
    Watermark,
    check_key_matches,
    get_scheme,
    load_key,
    save_key,
)


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


def load_data(config: TrainConfig, ctx: JobContext, device: torch.device) -> LoadedData:
    """The configured dataset on ``device``; says which one and why."""
    loaded = load_dataset(
        config.dataset,
        config.data_dir or None,
        device=device,
        train_size=config.train_size,
        test_size=config.test_size,
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
        if resume and run is not None:
            model_state, optimizer_state, loop_state = run.load_checkpoint()
            model.load_state_dict(model_state)
            start_step, base_lr = int(loop_state["step"]), float(loop_state["base_lr"])
            ctx.log(f"resuming {run.path} from step {start_step}")
        steps_per_epoch = -(-len(data.train_x) // config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        if start_step >= total_steps:
            raise ConfigError(f"{run.path if run else 'run'} already finished ({start_step} steps)")
        save = checkpointer(run, arch, ctx, steps_per_epoch) if run is not None else None
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


KEY_DIR = "key"


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


class KeyTracker:
    """The keys of one embedding: the original and every mid-run switch.

    ``SetTrigger`` / ``SetTargetLabel`` make a new key from the current one, replace the key
    source of the loop from the next batch on, and add a retention probe, so the stream
    carries retention for the old and the new key sets ("key", then e.g. "key:square",
    "key:label=3"). Each switched key is saved (0600) as ``RUN/key-2``, ``RUN/key-3``...
    """

    def __init__(
        self,
        scheme: Watermark,
        kctx: KeyContext,
        run: RunDir | None,
        key: Key,
        source_index: int,
        batch_size: int,
    ) -> None:
        self.scheme, self.kctx, self.run = scheme, kctx, run
        self.keys: dict[str, Key] = {"key": key}
        self.folders: dict[str, str] = {}
        self.current = key
        self.source_index = source_index
        self.batch_size = batch_size
        self.loop: TrainLoop | None = None
        if run is not None:
            self.folders["key"] = str(save_key(run.path / KEY_DIR, key))

    def attach(self, loop: TrainLoop, ctx: JobContext) -> None:
        self.loop = loop
        ctx.on(cmd.SetTrigger, lambda c: self.switch(trigger=str(c.trigger)))
        ctx.on(cmd.SetTargetLabel, lambda c: self.switch(target=int(c.label)))

    def _name(self, trigger: str | None, target: int | None) -> str:
        base = f"key:{trigger}" if trigger is not None else f"key:label={target}"
        name, n = base, 2
        while name in self.keys:
            name, n = f"{base}#{n}", n + 1
        return name

    def switch(self, *, trigger: str | None = None, target: int | None = None) -> str:
        assert self.loop is not None
        key = self.scheme.switch(self.current, self.kctx, trigger=trigger, target=target)
        name = self._name(trigger, target)
        sources = self.scheme.training_sources(key, self.batch_size, self.loop.device)
        for offset, source in enumerate(sources):  # the key source, then any decoy source
            self.loop.replace_source(self.source_index + offset, source)
        self.loop.probes.append(self.scheme.probe(key, self.kctx.data, name))
        self.keys[name] = key
        self.current = key
        where = ""
        if self.run is not None:
            folder = save_key(self.run.path / f"{KEY_DIR}-{len(self.keys)}", key)
            self.folders[name] = str(folder)
            where = f"; saved to {folder}"
        return (
            f"embedding {key.describe()} as {name!r} from step {self.loop.step}{where}; "
            f"tracking retention of {', '.join(self.keys)}"
        )


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
            if base_arch.in_shape != arch.in_shape or base_arch.name != arch.name:
                raise ConfigError(
                    f"--from {from_run}: its model is {base_arch.name} on {base_arch.in_shape}, "
                    f"not {arch.name} on {arch.in_shape}"
                )
            model = widen_outputs(base, arch) if base_arch != arch else base
            ctx.log(f"starting from the model of {from_run}")
        kctx = KeyContext(data, config.model, config.seed, config.data_dir, ctx.log)
        key = scheme.keygen(params, kctx)
        owner = Source("owner", data.train_x, config.batch_size, y=data.train_y)
        key_sources = scheme.training_sources(key, config.batch_size, device)
        tracker = KeyTracker(scheme, kctx, run, key, 1, config.batch_size)
        if run is not None:
            ctx.log(f"key saved to {tracker.folders['key']} (mode 0600, not in the model file)")
        steps_per_epoch = -(-len(data.train_x) // config.batch_size)
        total_steps = config.epochs * steps_per_epoch
        save = checkpointer(run, arch, ctx, steps_per_epoch) if run is not None else None
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
        ctx.emit(Phase("embed", "start", info=info))
        ctx.emit(true_trigger_preview(scheme.probe(key, data, "key", limit=1)))
        test = Probe("test", data.test_x, data.test_y, classes=k if arch.num_classes != k else None)
        loop = TrainLoop(
            model,
            [owner, *key_sources],
            OptimSettings.from_config(config),
            ctx=ctx,
            phase="embed",
            total_steps=total_steps,
            probes=[test, scheme.probe(key, data, "key")],
            eval_every=config.eval_every,
            seed=config.seed,
            on_checkpoint=save,
        )
        tracker.attach(loop, ctx)
        started = time.monotonic()
        summary: dict[str, Any] = {
            "dataset": data.name,
            "model": config.model,
            "device": str(device),
            "scheme": scheme_name,
        }
        try:
            result = run_loop(loop, run, summary, save)
        finally:
            ctx.off(cmd.SetTrigger, cmd.SetTargetLabel)
        verdicts = {
            name: scheme.verify(loop.model, key, data, alpha).to_dict()
            for name, key in tracker.keys.items()
        }
        summary |= {
            "status": "completed",
            "test_acc": result.test_acc,
            "retention": result.retention,
            "verify": verdicts["key"],
            "verdicts": verdicts,
            "keys": tracker.folders,
            "final_loss": result.loss,
            "steps": result.steps,
            "epochs": config.epochs,
            "seconds": round(time.monotonic() - started, 2),
        }
        if run is not None:
            run.write_summary(summary)
        ctx.emit(
            Phase("embed", "end", info={"test_acc": result.test_acc, "retention": result.retention})
        )
        return summary

    return job


def verify_run(
    run_path: Path,
    key_dir: Path | None = None,
    *,
    alpha: float = 1e-3,
    device: str = "auto",
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Query ``run_path``'s model with a key (default ``RUN/key``): the ownership verdict.

    The key must have been made for the run's dataset and input shape; the dataset is loaded
    as the run was trained (same test size), and the held-out samples come from its test set.
    """
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}")
    run = RunDir.open(run_path)
    config = TrainConfig.from_mapping(run.manifest()["config"])
    key = load_key(key_dir if key_dir is not None else run.path / KEY_DIR)
    dev = resolve_device(device)
    model, arch = run.load_model(dev)
    loaded = load_dataset(
        config.dataset,
        data_dir or config.data_dir or None,
        device=dev,
        train_size=config.train_size or 1,
        test_size=config.test_size,
    )
    data = loaded.data
    if arch.num_classes not in (data.num_classes, data.num_classes + 1):
        raise RunError(
            f"model of {run.path} has {arch.num_classes} outputs; {data.name} has "
            f"{data.num_classes} classes"
        )
    check_key_matches(key, data.name, arch.in_shape, data.num_classes)
    verdict = get_scheme(key.scheme).verify(model, key, data, alpha)
    return {
        "scheme": key.scheme,
        "key": str(key_dir if key_dir is not None else run.path / KEY_DIR),
        "run": str(run.path),
        **verdict.to_dict(),
    }


def true_trigger_preview(probe: Probe) -> TriggerPreview:
    """One key sample as the model is queried with it (stamped where the scheme stamps), so
    the playground can show the true trigger beside a detector's reversed one."""
    image = as_float(probe.x[:1])
    if probe.transform is not None:
        image = probe.transform(image)
    return TriggerPreview.from_tensor("true trigger", image[0])


def new_run_manifest(config: TrainConfig, command: str) -> dict[str, Any]:
    return {"command": command, "config": config.to_dict(), "seed": config.seed}


def config_from_run(path: Path) -> TrainConfig:
    run = RunDir.open(path)
    return TrainConfig.from_mapping(run.manifest()["config"])
