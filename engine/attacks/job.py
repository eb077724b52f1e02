"""The attack job: the engine as referee between an attacker and the owner's key.

The job loads the suspect model and the dataset named in its run, draws the attacker's data
from an explicit :class:`AttackerBudget`, and hands the attack a model, that data and an
:class:`AttackEnv`. The referee's probes (clean test set, plus the owner's key sets) live only
here: the training loop scores them every ``eval_every`` steps and streams ``Metrics``, and
the job measures them before and after. The attack never receives the key or the scores.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData, build_attacker_data
from engine.attacks.registry import ATTACKS, Attack, AttackEnv, TrainReport
from engine.data import ImageSet, load_dataset
from engine.errors import ConfigError, RunError
from engine.events import Phase, json_safe
from engine.jobs import recording_outcome, resolve_device
from engine.metrics import Probe, accuracy
from engine.models import Architecture
from engine.registry import parse_params
from engine.runs import RunDir, load_model
from engine.session import Job, JobContext
from engine.training import OptimSettings, Source, TrainLoop, clean_test_probe

ProbesFor = Callable[[ImageSet, torch.device], list[Probe]]
KEY_DIR = "key"


def key_run(run_dir: Path, max_depth: int = 16) -> Path | None:
    """The run holding the owner's key: ``run_dir`` itself, else the run it was attacked from
    (an attacked run records ``source_run``), so chained attacks are still refereed."""
    path: Path | None = Path(run_dir)
    for _ in range(max_depth):
        if path is None:
            return None
        if (path / KEY_DIR).is_dir():
            return path
        try:
            source = RunDir(path).manifest().get("source_run")
        except RunError:
            return None
        path = Path(source) if source else None
    return None


def default_probes(run_dir: Path) -> ProbesFor:
    """The clean test probe, plus the owner's key probes when the run has a key and the
    watermark schemes provide ``engine.watermarks.load_key_probes(run_dir, data, device)``."""

    def probes_for(data: ImageSet, device: torch.device) -> list[Probe]:
        probes = [clean_test_probe(data)]
        owner = key_run(run_dir)
        if owner is None:
            return probes
        try:
            from engine.watermarks import load_key_probes
        except ImportError:
            return probes
        return probes + list(load_key_probes(owner, data, device))

    return probes_for


def referee_scores(model: nn.Module, probes: Iterable[Probe]) -> dict[str, Any]:
    """``{"test_acc": ..., "retention": {key probe: accuracy}}`` at full precision."""
    scores = {p.name: accuracy(model, p) for p in probes}
    return {
        "test_acc": json_safe(scores.get("test")),
        "retention": {k: json_safe(v) for k, v in scores.items() if k != "test"},
    }


def make_attack(name: str, params: Any = None) -> Attack[Any]:
    """The registered attack with validated params (a dataclass, or loose values to parse)."""
    plugin = ATTACKS.get(name)
    assert plugin.params is not None
    if params is None or isinstance(params, Mapping):
        params = parse_params(plugin.params, params)
    elif not isinstance(params, plugin.params):
        raise ConfigError(f"attack {name!r} takes {plugin.params.__name__}, not {type(params)}")
    return plugin.factory(params)


def sweep_params(attack: Attack[Any], ratios: Sequence[float]) -> list[Any]:
    """One params object per ratio, each validated against the attack's ratio bounds."""
    if not any(f.name == "ratio" for f in dataclasses.fields(attack.params)):
        raise ConfigError("--sweep needs an attack with a ratio (prune, fine-prune)")
    if not ratios:
        raise ConfigError("--sweep needs at least one ratio")
    base = dataclasses.asdict(attack.params)
    return [parse_params(type(attack.params), {**base, "ratio": r}) for r in ratios]


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


def attack_manifest(
    run_dir_in: Path,
    attack_name: str,
    params: Any,
    budget: AttackerBudget,
    sweep: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Manifest of the attacked run: everything the attacker was given."""
    return derived_manifest(
        run_dir_in,
        "attack",
        {
            "name": attack_name,
            "params": dataclasses.asdict(params),
            "budget": budget.to_dict(),
            "sweep": list(sweep) if sweep else None,
        },
    )


def source_dataset(run: RunDir, config: Mapping[str, Any]) -> str:
    """The dataset the suspect was trained on; ``auto`` is resolved from the run's summary so a
    different machine does not pick a different dataset."""
    name = str(config.get("dataset", "auto"))
    if name == "auto":
        with contextlib.suppress(RunError):
            name = str(run.summary().get("dataset") or "auto")
    return name


def load_attacker_data(
    run: RunDir, budget: AttackerBudget, device: torch.device
) -> tuple[ImageSet, int, AttackerData]:
    """The run's dataset on ``device``, the attacker's seed (the budget's, else the run's) and
    the attacker's share of the data."""
    config = run.manifest()["config"]
    data = load_dataset(
        source_dataset(run, config),
        config.get("data_dir") or None,
        device=device,
        train_size=int(config.get("train_size", 0)),
        test_size=int(config.get("test_size", 0)),
    ).data
    seed = budget.seed if budget.seed >= 0 else int(config.get("seed", 0))
    attacker = build_attacker_data(budget, data, seed=seed, data_dir=config.get("data_dir") or None)
    return data, seed, attacker


def load_suspect(
    run: RunDir, budget: AttackerBudget, device: str
) -> tuple[torch.device, ImageSet, nn.Module, Architecture, int, AttackerData]:
    """What an attack or a detector starts from: the device, the run's dataset, its model,
    the attacker's seed and the attacker's share of the data."""
    dev = resolve_device(device)
    data, seed, attacker = load_attacker_data(run, budget, dev)
    suspect, arch = load_model(run.path, dev)
    return dev, data, suspect, arch, seed, attacker


def attack_job(
    run_dir_in: str | Path,
    attack_name: str,
    params: Any,
    budget: AttackerBudget,
    out_run: RunDir | None,
    probes_for: ProbesFor | None = None,
    *,
    device: str = "auto",
    eval_every: int = 100,
    sweep: Sequence[float] | None = None,
) -> Job:
    """Attack the model of ``run_dir_in`` within ``budget``; write ``out_run``.

    Input errors (unknown attack, bad params, a budget the attack cannot use, a missing run,
    bad sweep ratios) raise here, before anything is created or loaded. The job emits
    ``Phase`` and the loop's ``Metrics`` (retention per key probe) and returns the summary:
    before/after ``test_acc`` and ``retention`` (also written to ``out_run/summary.json``).
    """
    attack = make_attack(attack_name, params)
    attack.check_budget(budget)
    variants = sweep_params(attack, sweep) if sweep is not None else None
    if eval_every < 1:
        raise ConfigError(f"eval-every must be >= 1, got {eval_every}")
    run = RunDir.open(run_dir_in)
    resolve_device(device)
    probes_for = probes_for or default_probes(run.path)

    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        dev, data, suspect, arch, seed, attacker = load_suspect(run, budget, device)
        probes = probes_for(data, dev)
        if len(probes) == 1:
            ctx.log("no key probes for this run: retention is not measured", "warning")
        before = referee_scores(suspect, probes)
        summary: dict[str, Any] = {
            "attack": attack_name,
            "params": dataclasses.asdict(attack.params),
            "budget": budget.to_dict(),
            "seed": seed,
            "source_run": str(run.path),
            "dataset": data.name,
            "device": str(dev),
            "labeled_images": len(attacker.labeled_x),
            "unlabeled_images": len(attacker.unlabeled_x),
            "before": before,
        }
        info = {
            "attack": attack_name,
            "data_fraction": budget.data_fraction,
            "steps": attack.planned_steps(attacker) * (len(variants) if variants else 1),
            "source_run": str(run.path),
            "dataset": data.name,
            "unlabeled": budget.unlabeled,
            "labeled_images": len(attacker.labeled_x),
            "device": str(dev),
        }
        ctx.emit(Phase(attack_name, "start", info=info))
        ctx.log(f"before the attack: {_describe(before)}")
        env = AttackEnv(ctx, dev, seed, referee_trainer(ctx, attack_name, probes, eval_every, seed))
        with recording_outcome(out_run, summary):
            if variants is not None:
                summary |= _sweep(ctx, variants, attack_name, suspect, arch, attacker, env, probes)
            else:
                result = attack.run(suspect, arch, attacker, env)
                after = referee_scores(result.model, probes)
                summary |= {
                    "after": after,
                    "test_acc": after["test_acc"],
                    "retention": after["retention"],
                    "test_acc_before": before["test_acc"],
                    "retention_before": before["retention"],
                    "steps": result.steps,
                    "model": result.arch.name,
                    "info": json_safe(result.info),
                }
                if out_run is not None:
                    out_run.save_model(result.model, result.arch)
                ctx.log(f"after the attack: {_describe(after)}")
        summary |= {"status": "completed", "seconds": round(time.monotonic() - started, 2)}
        summary = json_safe(summary)
        if out_run is not None:
            out_run.write_summary(summary)
        ctx.emit(Phase(attack_name, "end", info={"test_acc": summary.get("test_acc")}))
        return summary

    return job


def referee_trainer(
    ctx: JobContext, phase: str, probes: list[Probe], eval_every: int, seed: int
) -> Callable[..., TrainReport]:
    """``env.train``: the one loop, with the referee's probes closed over, returning no scores."""

    def train(
        model: nn.Module,
        sources: list[Source],
        settings: OptimSettings,
        *,
        steps: int,
        params: Iterable[nn.Parameter] | None = None,
    ) -> TrainReport:
        loop = TrainLoop(
            model,
            sources,
            settings,
            ctx=ctx,
            phase=phase,
            total_steps=steps,
            probes=probes,
            eval_every=eval_every,
            seed=seed,
            params=params,
        )
        result = loop.run()
        return TrainReport(result.steps, result.loss)

    return train


def _sweep(
    ctx: JobContext,
    variants: list[Any],
    name: str,
    suspect: nn.Module,
    arch: Architecture,
    attacker: AttackerData,
    env: AttackEnv,
    probes: list[Probe],
) -> dict[str, Any]:
    """Run the attack once per ratio on a fresh copy of the suspect; the referee scores each."""
    rows = []
    for params in variants:
        result = ATTACKS.get(name).factory(params).run(copy.deepcopy(suspect), arch, attacker, env)
        scores = referee_scores(result.model, probes)
        row = {
            "ratio": params.ratio,
            "sparsity": result.info.get("sparsity"),
            # what the ratio removed: units for neuron pruning, weights otherwise
            "pruned": result.info.get("unit_fraction", result.info.get("sparsity")),
            "test_acc": scores["test_acc"],
            "retention": scores["retention"],
        }
        rows.append(row)
        ctx.log(f"ratio {params.ratio:g}: {_describe(scores)}")
    return {"sweep": rows}


def _describe(scores: Mapping[str, Any]) -> str:
    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    parts = [f"test acc {pct(scores.get('test_acc'))}"]
    parts += [f"{k} {pct(v)}" for k, v in scores.get("retention", {}).items()]
    return ", ".join(parts)
