"""Follow-up jobs on the model in hand: an attack or a scan mid-phase, without ending it.

A job that holds a model it is training (train, embed) or working on (an attack, a scan's
removal) calls :func:`hold`. ``Followup`` then snapshots that model as it is at this step into
a run folder beside the current one, runs the chosen job on the snapshot on the same context
(its events stream as any phase's, into its own folder too), and returns to the step loop.
Stop ends everything as always; ``SkipPhase`` ends only the follow-up.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from torch import nn

from engine import commands as cmd
from engine.errors import ConfigError
from engine.events import Log
from engine.jobs.common import derived_manifest
from engine.jobs.spec import JobSpec
from engine.models import Architecture
from engine.runs import RunDir
from engine.session import JobContext, StopRequested


@dataclasses.dataclass
class ModelInHand:
    model: nn.Module
    arch: Architecture
    run: RunDir
    phase: str
    step: Any = None  # a callable giving the current step, or None


def sibling_path(beside: Path, name: str) -> Path:
    """``<name>-<time>`` next to ``beside`` (numbered when taken), so a session's runs stay
    together."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = beside.parent / f"{name}-{stamp}"
    n = 2
    while path.exists():
        path, n = beside.parent / f"{name}-{stamp}-{n}", n + 1
    return path


def hold(
    ctx: JobContext,
    model: nn.Module,
    arch: Architecture,
    run: RunDir | None,
    phase: str,
    step: Any = None,
) -> None:
    """Offer ``model`` (trained or attacked in ``run``) to follow-up jobs until the phase
    ends; a phase without a run folder has nowhere to record one and offers nothing."""
    if run is None:
        return
    ctx.in_hand = ModelInHand(model, arch, run, phase, step)
    ctx.on(cmd.Followup, lambda command: run_followup(ctx, command))


def snapshot(hand: ModelInHand, last_step: int | None = None) -> RunDir:
    """The model as it is now, as a run of its own whose manifest points at the phase's run
    (so the owner's key is found for refereeing, and the dataset reloads the same way); a
    phase that does not count its steps for us is named by ``last_step``, the latest the
    stream carried (``snapshot-<phase>-step<N>``, as everywhere)."""
    step = hand.step() if callable(hand.step) else last_step
    details = {"phase": hand.phase, "step": step}
    label = f"{hand.phase}-step{step}" if step is not None else hand.phase
    folder = sibling_path(hand.run.path, f"snapshot-{label}")
    run = RunDir.create(folder, derived_manifest(hand.run.path, "snapshot", details))
    run.save_model(hand.model, hand.arch)
    run.write_summary({"status": "completed", **details})
    return run


def run_followup(ctx: JobContext, command: cmd.Followup) -> str:
    hand = ctx.in_hand
    if not isinstance(hand, ModelInHand):
        raise ConfigError("no model in hand yet (the phase is still loading); try again")
    if command.kind not in ("attack", "detect"):
        raise ConfigError(f"a follow-up is an attack or a scan, not {command.kind!r}")
    spec = JobSpec(command.kind, command.plugin, dict(command.params), budget=dict(command.budget))
    spec.validate(inputs=False)  # a bad form is refused before a snapshot is written
    source = snapshot(hand, ctx.last_step)
    outer_step = ctx.last_step
    spec = dataclasses.replace(
        spec, source=source.path, out=sibling_path(hand.run.path, command.plugin)
    )
    built = spec.build()
    assert built.run is not None
    ctx.log(
        f"{command.plugin} on {hand.phase}'s model as it is now ({source.path}) -> {built.run.path}"
    )
    sink = built.run.event_sink()
    was_skippable = ctx.skippable
    try:
        with ctx.nested(sink):
            ctx.skippable = True  # n ends the follow-up, not the phase
            built.job(ctx)
    except StopRequested:
        if not ctx.skip_requested or ctx.stop_flag.is_set():
            raise
        ctx.skip_requested = ctx.stop_requested = False
        ctx.emit(Log(f"{command.plugin} ended early; back to {hand.phase}"))
    finally:
        ctx.skippable = was_skippable
        ctx.last_step = outer_step  # the follow-up's steps are not the phase's
        sink.close()
    return f"{command.plugin} done ({built.run.path}); back to {hand.phase}"
