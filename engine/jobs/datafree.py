"""The data-free embedding job: distil a generator from the owner's trained model (truncated),
then inject the triggers with the generator's samples in place of the training data.

``wmtui embed --scheme datafree --from RUN``: the embed kind hands datafree here. Phases, as
the live views show them: ``distill`` (one Discrepancy event per epoch; skipped when neither
the adjustment nor the triggers need a generator) and ``embed`` (the one training loop, its
test accuracy being the fidelity and its ``key`` retention the trigger accuracy). The
training split is loaded only for ``--adjust data`` (S4); S1-S3 read the test split alone,
which the live fidelity line and the verdict need.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import torch

from engine import commands as cmd
from engine import progress
from engine.config import TrainConfig
from engine.errors import ConfigError
from engine.events import Phase
from engine.jobs.common import (
    checkpointer,
    load_data,
    recording_outcome,
    resolve_device,
    run_loop,
)
from engine.jobs.followup import hold
from engine.jobs.key_tracker import KeyTracker, true_trigger_preview
from engine.jobs.verdicts import log_verdicts, verifying
from engine.metrics import Probe, accuracy
from engine.models import Architecture, build_model
from engine.models.dfad_generator import DFADGenerator
from engine.runs import RunDir, save_tensors
from engine.session import Job, JobContext
from engine.training import OptimSettings, Source, TrainLoop
from engine.watermarks import KeyContext, get_scheme
from engine.watermarks.base import SECRET_MODE
from engine.watermarks.datafree import (
    SETTING_NAMES,
    DatafreeParams,
    DatafreeScheme,
    batch_shares,
    round_steps,
)
from engine.watermarks.dfad import DistillResult, distill

GENERATOR_FILE = "generator.safetensors"
#: rounds between checkpoints: a round is a few steps, and a checkpoint a line in the log
CHECKPOINT_ROUNDS = 10


def load_clean_model(from_run: Path, device: torch.device) -> tuple[torch.nn.Module, Architecture]:
    """M_clean, frozen; the embed kind has already refused a missing or corrupt one."""
    model, arch = RunDir.open(from_run).load_model(device)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, arch


def adjustment_source(
    params: DatafreeParams,
    clean: torch.nn.Module,
    gen: DFADGenerator | None,
    data: Any,
    seed: int,
    batch_size: int,
) -> Source | None:
    """The second term of eq. (3) for the chosen setting (Table 1): its share of each batch,
    M fresh images per round. S4 streams the whole training split (see the scheme's doc)."""
    m = batch_shares(batch_size, params)[1]
    if params.adjust == "none":
        return None
    if params.adjust == "data":
        return Source("data", data.train_x, m, y=data.train_y, weight=params.lam)

    def teacher(x: torch.Tensor) -> torch.Tensor:
        return clean(x).float()

    def draw(step: int) -> torch.Tensor:
        rng = torch.Generator().manual_seed(seed * 1_000_003 + step)
        if params.adjust == "noise":
            return torch.randn(m, *data.shape, generator=rng).to(data.test_x.device)
        assert gen is not None
        return gen.sample(m, rng)

    name = "noise" if params.adjust == "noise" else "generated"
    return Source(name, None, m, label=teacher, draw=draw, loss="mse", weight=params.lam)


def datafree_job(
    config: TrainConfig,
    params: DatafreeParams,
    run: RunDir | None,
    from_run: Path,
    *,
    alpha: float = 1e-3,
) -> Job:
    scheme = get_scheme("datafree")
    assert isinstance(scheme, DatafreeScheme)

    def job(ctx: JobContext) -> dict[str, Any]:
        device = resolve_device(config.device)
        uses_data = params.adjust == "data"
        loaded = load_data(config, ctx, device, train=uses_data)
        data = loaded.data
        if not uses_data:
            ctx.log("training data: not read (data-free; the test split measures fidelity)")
        clean, arch = load_clean_model(from_run, device)
        if arch.in_shape != data.shape or arch.num_classes != data.num_classes:
            raise ConfigError(
                f"--from {from_run}: its model takes {arch.in_shape} with {arch.num_classes} "
                f"outputs; {data.name} is {data.shape} with {data.num_classes} classes"
            )
        torch.manual_seed(config.seed)
        test = Probe("test", data.test_x, data.test_y)
        clean_acc = accuracy(clean, test)
        setting = SETTING_NAMES[params.adjust]
        summary: dict[str, Any] = {
            "dataset": data.name,
            "model": arch.name,
            "device": str(device),
            "scheme": "datafree",
            "setting": setting,
            "trigger": params.trigger,
            "clean_acc": clean_acc,
            "from": str(from_run),
        }
        ctx.log(f"clean model: test accuracy {100 * clean_acc:.2f}% ({setting}, {params.trigger})")
        gen = None
        if params.needs_generator:
            with recording_outcome(run, summary | {"phase": "distill"}):
                result = distill_phase(ctx, clean, arch, data.shape, params, config.seed)
            gen = result.generator
            summary["distill"] = result.to_dict()
            if run is not None:
                save_tensors(run.path / GENERATOR_FILE, gen.state_dict(), mode=SECRET_MODE)
        kctx = KeyContext(data, arch.name, config.seed, config.data_dir, ctx.log)
        key = scheme.make_key(params, kctx, clean, gen)
        sources = scheme.training_sources(key, config.batch_size, device, data)
        extra = adjustment_source(params, clean, gen, data, config.seed, config.batch_size)
        sources += [extra] if extra is not None else []
        tracker = KeyTracker(scheme, kctx, run, key, 0, config.batch_size)
        if run is not None:
            ctx.log(f"key saved to {tracker.folders['key']} (mode 0600, not in the model file)")
        per_round = round_steps(config.batch_size, params)
        least_steps = config.epochs * per_round
        max_rounds = max(config.epochs, params.max_rounds)
        total_steps = max_rounds * per_round
        model = copy.deepcopy(clean)
        for p in model.parameters():
            p.requires_grad_(True)
        ctx.emit(
            Phase(
                "embed",
                "start",
                info={
                    "scheme": "datafree",
                    "key": key.describe(),
                    "dataset": data.name,
                    "dataset_reason": loaded.reason,
                    "model": arch.name,
                    "device": str(device),
                    "epochs": config.epochs,
                    "max_rounds": max_rounds,
                    # the plan: --epochs rounds; past it only while a trigger is not learnt
                    "steps": least_steps,
                    "max_steps": total_steps,
                    "run": str(run.path) if run else "",
                    "from": str(from_run),
                },
            )
        )
        ctx.emit(true_trigger_preview(scheme.probe(key, data, "key", limit=1)))
        save = checkpointer(run, arch, ctx, per_round) if run is not None else None
        loop = TrainLoop(
            model,
            sources,
            OptimSettings.from_config(config),
            ctx=ctx,
            phase="embed",
            total_steps=total_steps,
            probes=[test, *scheme.probes(key, data, "key")],
            eval_every=config.eval_every,
            epoch_steps=per_round,
            seed=config.seed,
            on_checkpoint=save,
            checkpoint_every=CHECKPOINT_ROUNDS,
            freeze_norm_stats=True,
            done=lambda step, scores: every_trigger_learnt(step, scores, least_steps),
        )
        tracker.attach(loop, ctx)
        hold(ctx, loop.model, arch, run, "embed", lambda: loop.step)
        started = time.monotonic()
        try:
            loop_result = run_loop(loop, run, summary, save)
        finally:
            ctx.off(cmd.SetTrigger, cmd.SetTargetLabel)
        summary |= {
            "test_acc": loop_result.test_acc,
            "fidelity_drop": None
            if loop_result.test_acc is None
            else clean_acc - loop_result.test_acc,
            "retention": loop_result.retention,
            "keys": tracker.folders,
            "final_loss": loop_result.loss,
            "steps": loop_result.steps,
            "rounds": loop_result.steps // per_round,
            "ended": loop.finished_early or "the last round",
            "inject_seconds": round(time.monotonic() - started, 2),
        }
        with recording_outcome(run, summary):
            ctx.log(verifying(1, 1, "key"), progress.LEVEL)
            verdict = scheme.verify(loop.model, key, data, alpha).to_dict()
        # the verdict in the log: the live view showed no p-value or decision before
        log_verdicts(ctx, {"key": verdict}, loop_result.test_acc, data.num_classes)
        summary |= {"status": "completed", "verify": verdict, "verdicts": {"key": verdict}}
        if run is not None:
            run.write_summary(summary)
        ctx.emit(
            Phase(
                "embed",
                "end",
                info={"test_acc": loop_result.test_acc, "retention": loop_result.retention},
            )
        )
        return summary

    return job


def every_trigger_learnt(step: int, scores: dict[str, float], least_steps: int) -> str | None:
    """Why injection may end before --max-rounds: --epochs rounds are done and the key's
    accuracy is 100%."""
    if step >= least_steps and scores.get("key", 0.0) >= 1.0:
        return "every trigger learnt"
    return None


def distill_phase(
    ctx: JobContext,
    clean: torch.nn.Module,
    arch: Architecture,
    shape: tuple[int, int, int],
    params: DatafreeParams,
    seed: int,
) -> DistillResult:
    """The generator, by (truncated) DFAD against a fresh student of the clean model's
    architecture, between its two Phase events."""
    settings = params.distill_settings()
    ctx.emit(
        Phase(
            "distill",
            "start",
            info={
                "scheme": "datafree",
                "model": arch.name,
                "epochs": settings.epochs,
                "t0": settings.t0,
                "complete": settings.complete,
                "discrepancy": settings.discrepancy,
            },
        )
    )
    torch.manual_seed(seed + 1)
    device = next(clean.parameters()).device
    student = build_model(arch).to(device)
    result = distill(clean, student, shape, settings, ctx, seed=seed)
    ctx.emit(Phase("distill", "end", info=result.to_dict()))
    return result


def check_source(from_run: Path | None, *, load: bool = True) -> Path:
    """``--from`` is required and (``load``) its model must load: refused before --out
    exists."""
    if from_run is None:
        raise ConfigError(
            "--scheme datafree needs --from RUN: it watermarks a trained model without its "
            "training data"
        )
    if load:
        RunDir.open(from_run).load_model("cpu")  # a missing or corrupt model: one line
    return from_run
