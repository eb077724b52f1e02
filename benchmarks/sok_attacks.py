"""The SoK's removal table on our engine: schemes x attacks, removed-rate and accuracy.

Lukas et al., "SoK: How Robust is Image Classification Deep Neural Network Watermarking?"
(IEEE S&P 2022) measure every scheme against every removal attack with one rule and find
that no scheme survives every attack, no attack removes every scheme, and combined attacks
remove them all. This script puts our engine through the same exercise and says, from the
table it measured, whether those three findings hold here.

For each scheme (pattern, abstract, newlabel, dual) and seed (0, 1, 2) one model is
embedded from scratch (fashion-mnist + lenet5, 3 epochs, the full training set); each
scheme's decision threshold comes from the ``threshold`` job: K = 5 unmarked null models
(seeds 100..104, the same training config), cached per (dataset, architecture, scheme, key
size) so ``wmtui threshold`` and this script share them. Then every removal attack of the
preprocessing and modification families in the attack registry (a new plugin is picked up
by its family) and the SoK's combined attacks run on each model, one refereed ``attack`` job
each, and the summary's ``removed`` (the SoK's success rule) is tabulated: removed-rate over
the seeds, test accuracy after the attack mean +- sd, and the attack's mean wall time.

Left out: the extraction family (``distill``: the next issue's table), the detectors, and
``piracy`` (a claim attack: it adds the attacker's key and is judged by that claim).

The attacker's budget: WRT's attacker holds a third of the training data (WRT
``wrt/training/datasets/cifar10.py``: the ``attacker`` subset is the first ``len // 3`` of a
seeded shuffle) and trains for the epochs of each attack's config (WRT
``configs/cifar10/attack_configs/*.yaml``: ftal 5, fine-pruning 10, weight shifting 10,
label smoothing 5, adversarial training 5, regularization 5, neural laundering 5, weight
quantization 1): ``--scale full``. ``--scale quick`` keeps the models, the thresholds and
WRT's epochs but gives the attacker 10% of the data, and the costly attacks (adversarial
training, neural laundering, input reconstruction, overwriting, the combined attack that
starts with adversarial training) 1 epoch, so the table fits on 2 CPU cores;
``--scale smoke`` (synthetic data, 1 seed, 2 schemes, 3 attacks) checks the script.

    python benchmarks/sok_attacks.py [--scale quick|full|smoke] [--out runs/sok.md]
        [--schemes pattern,dual] [--attacks jpeg,weight-shifting] [--seeds 0] [--work DIR]
        [--minutes 30]

Resumable: every embedding and attack is a run folder under ``--work``, named by a hash of
its configuration and of the threshold its verdict used; a rerun reuses the completed ones.
It runs seed by seed (every scheme's model, then each attack on all of them, the costly ones
last), so a run stopped early (Ctrl-C, ``--minutes``) still prints whole rows, marked
incomplete. Not a test: CI never runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from engine.config import TrainConfig
from engine.errors import ConfigError, UserError, unknown_name
from engine.jobs import JOB_KINDS, JobFailed, JobSpec, run
from engine.jobs.success import judge, primary_key_accuracy
from engine.jobs.threshold import find_threshold, key_size_of
from engine.threads import ThreadChoice, choose_threads
from engine.watermarks import SCHEMES as SCHEMES_REGISTRY

sys.path.insert(0, str(Path(__file__).resolve().parent))
# benchmarks/sok_plan.py: what runs; benchmarks/sok_table.py: the counting
from sok_plan import (
    ATTACK_EVAL_EVERY,
    EMBED_EVAL_EVERY,
    EXCLUDED,
    NULL_SEED,
    SCALES,
    SCHEME_PARAMS,
    SCHEMES,
    Cell,
    Scale,
    budget_for,
    digest,
    plan_cells,
    run_order,
    train_config,
)
from sok_table import BASELINE, BASELINE_FAMILY, finish, pct, row_line


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- running ---------------------------------------------------------------------------------
def completed(folder: Path) -> dict[str, Any] | None:
    """The summary of a completed run folder, else None (absent, stopped, failed)."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(summary, dict) and summary.get("status", "completed") == "completed"
    return summary if ok else None


def run_or_reuse(spec: JobSpec, folder: Path) -> tuple[dict[str, Any], bool]:
    """The job's summary, from its folder when a previous run completed it."""
    summary = completed(folder)
    if summary is not None:
        return summary, True
    spec.out, spec.overwrite = folder, True
    return run(spec).summary, False


def embed(scheme: str, config: dict[str, Any], work: Path) -> tuple[Path, dict[str, Any]]:
    """The watermarked model of (scheme, seed): embedded from scratch, or reused."""
    params = SCHEME_PARAMS.get(scheme, {})
    config = config | {"eval_every": EMBED_EVAL_EVERY}
    # named by what shapes the weights: how often it is evaluated, and where, do not
    weights = {k: v for k, v in config.items() if k not in ("eval_every", "device")}
    folder = work / f"embed-{scheme}-s{config['seed']}-{digest([scheme, params, weights])}"
    spec = JobSpec.embed(scheme, params=params, config=config)
    summary, reused = run_or_reuse(spec, folder)
    say(
        f"embed {scheme} seed {config['seed']}: test acc {pct(summary.get('test_acc'))}"
        + (" (reused)" if reused else f" ({summary.get('seconds', 0):.0f} s)")
    )
    return folder, summary


def cached_threshold(scheme: str, scale: Scale, config: dict[str, Any]) -> dict[str, Any] | None:
    """A cached record made from these very null models (same K, seeds and training), as the
    threshold job's summary has it; None when there is none. Reusing it, rather than running
    the job again, never overwrites a record someone else computed with more keys."""
    defaults = {
        f.name: f.default for f in dataclasses.fields(SCHEMES_REGISTRY.get(scheme).factory.Params)
    }
    record = find_threshold(
        config["dataset"], config["model"], scheme, key_size_of(scheme, defaults)
    )
    if record is None:
        return None
    ignored = ("seed", "device", "eval_every", "data_dir")
    same = {k: v for k, v in record.config.items() if k not in ignored} == {
        k: v for k, v in TrainConfig.from_mapping(config).to_dict().items() if k not in ignored
    }
    seeds = list(range(NULL_SEED, NULL_SEED + scale.null_models))
    if not same or record.seeds != seeds or record.null_archs not in ([], [config["model"]]):
        return None
    return {"threshold": record.threshold, "record": record.to_dict(), "reused": True}


def threshold(scheme: str, scale: Scale, config: dict[str, Any]) -> dict[str, Any] | None:
    """The scheme's SoK threshold: a cached record of these null models, else the
    ``threshold`` job's, which trains the null models (seeds 100, 101, ...) or reuses them
    from its cache and caches the record every attack job then reads; None with a warning
    when this engine has no such job or it fails."""
    if "threshold" not in JOB_KINDS:
        say(f"threshold {scheme}: no threshold job in this engine; removed stays unknown")
        return None
    summary = cached_threshold(scheme, scale, config)
    if summary is None:
        params = {"scheme": scheme, "null_models": scale.null_models, "null_seed": NULL_SEED}
        try:
            summary = run(JobSpec("threshold", params=params, config=config)).summary
        except (UserError, JobFailed) as exc:  # the table goes on, its verdicts unknown
            say(f"threshold {scheme} failed: {str(exc).splitlines()[0]}; removed stays unknown")
            return None
    record = summary.get("record", {})
    say(
        f"threshold {scheme}: key accuracy <= {pct(summary.get('threshold'))} counts as unmarked "
        f"({record.get('null_models', '?')} null models"
        + (
            ", the cached record"
            if summary.get("reused")
            else f", {summary.get('null_models_trained', 0)} trained now"
        )
        + f"; their test acc {pct(record.get('null_test_acc_mean'))})"
    )
    return summary


def baseline(marked: dict[str, Any], found: dict[str, Any] | None) -> dict[str, Any]:
    """The watermarked model before any attack, judged by the same rule: a row the table
    shows first (every freshly watermarked model should be above its threshold: 0/n)."""
    record = (found or {}).get("record", {})
    verdict = judge(
        float(marked.get("test_acc") or 0.0),
        primary_key_accuracy(marked.get("retention") or {}),
        record.get("null_test_acc_mean"),
        (found or {}).get("threshold"),
    )
    return {
        "attack": BASELINE,
        "family": BASELINE_FAMILY,
        "status": "completed",
        "removed": verdict["removed"],
        "why": verdict["why"],
        "test_acc": marked.get("test_acc"),
        "wm_accuracy": verdict["wm_accuracy"],
        "seconds": None,
        "job_seconds": marked.get("seconds"),
    }


def basis(summary: dict[str, Any] | None) -> list[Any] | None:
    """What a verdict rests on: the threshold and the null models' test accuracy."""
    if not summary:
        return None
    record = summary.get("record", {})
    return [summary.get("threshold"), record.get("null_test_acc_mean"), record.get("null_models")]


def attack(
    cell: Cell, model_run: Path, budget: dict[str, Any], device: str, rests_on: Any = None
) -> dict[str, Any]:
    """One cell on one model: a row with the verdict, the accuracy and the cost. ``rests_on``
    (the threshold and the unmarked accuracy the verdict used) is part of the folder's name,
    so a recomputed threshold runs the cell again rather than reuse a stale verdict."""
    folder = model_run.parent / f"{model_run.name}-{cell.label.replace(' ', '_').replace('=', '-')}"
    folder = folder.with_name(
        folder.name + "-" + digest([cell.name, cell.params, cell.chain, budget, rests_on])
    )
    row: dict[str, Any] = {"attack": cell.label, "family": cell.family, "run": str(folder)}
    try:
        spec = JobSpec.attack(
            cell.name,
            run=model_run,
            device=device,
            eval_every=ATTACK_EVAL_EVERY,
            params=cell.params,
            budget=budget,
            chain=list(cell.chain) if cell.chain else None,
        )
        summary, reused = run_or_reuse(spec, folder)
    except UserError as exc:  # the attack cannot take this model or budget
        return row | {"status": "n/a", "reason": str(exc).splitlines()[0]}
    except JobFailed as exc:
        return row | {"status": "failed", "reason": str(exc).splitlines()[0]}
    cost = summary.get("cost") or {}
    return row | {
        "status": "completed",
        "reused": reused,
        "removed": summary.get("removed"),
        "why": summary.get("why"),
        "test_acc": summary.get("test_acc"),
        "wm_accuracy": summary.get("wm_accuracy"),
        "seconds": cost.get("seconds", summary.get("seconds")),
        "job_seconds": summary.get("seconds"),
        "cost": cost,
    }


# -- the command -----------------------------------------------------------------------------
def names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in names(text)]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, got {text!r}") from None
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds must be >= 0, got {text!r}")
    return list(dict.fromkeys(seeds))


@dataclasses.dataclass
class Plan:
    """The command line, checked: what the table runs and where it writes."""

    scale_name: str
    scale: Scale
    dataset: str
    model: str
    schemes: list[str]
    seeds: list[int]
    cells: list[Cell]
    work: Path
    out: Path
    device: str
    threads: ThreadChoice  # the engine's policy (engine/threads.py): the free cores
    minutes: float
    only_list: bool


def parse(argv: Sequence[str] | None) -> Plan:
    """Every check of the command line, before anything runs or is written."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="quick")
    parser.add_argument("--dataset", default="", help="default: the scale's (fashion-mnist)")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--schemes", default="", help="comma-separated (default: the scale's)")
    parser.add_argument("--attacks", default="", help="labels, names or families to run")
    parser.add_argument("--seeds", default="", help="comma-separated (default: the scale's)")
    parser.add_argument("--work", type=Path, default=None, help="run folders (resumable)")
    parser.add_argument("--out", type=Path, default=None, help="markdown (+ .json) of the table")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the free cores)"
    )
    parser.add_argument(
        "--minutes", type=float, default=0, help="start no new job after this long (0: no limit)"
    )
    parser.add_argument("--list", action="store_true", help="print the plan and exit")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    schemes = list(dict.fromkeys(names(args.schemes))) or list(scale.schemes)
    for scheme in schemes:
        if scheme not in SCHEMES:
            raise unknown_name("--schemes entry", scheme, SCHEMES)
    threads = choose_threads(args.threads)  # a bad count: one line
    if not 0 <= args.minutes < float("inf"):
        raise ConfigError(f"--minutes must be >= 0, got {args.minutes:g}")
    work = args.work or Path("runs") / f"bench-sok-{args.scale}"
    return Plan(
        args.scale,
        scale,
        args.dataset or scale.dataset,
        args.model,
        schemes,
        seed_list(args.seeds) if args.seeds else list(scale.seeds),
        plan_cells(names(args.attacks), 0 if args.attacks else scale.max_attacks),
        work,
        args.out or work / "table.md",
        args.device,
        threads,
        args.minutes,
        args.list,
    )


class OutOfTime(Exception):
    """``--minutes`` has passed: start no new job, print what was measured."""


def time_left(plan: Plan, started: float) -> None:
    if plan.minutes and time.monotonic() - started > 60 * plan.minutes:
        raise OutOfTime


def measure(
    plan: Plan, started: float, thresholds: dict[str, Any], rows: list[dict[str, Any]]
) -> None:
    """The thresholds, then seed by seed every scheme's model and each attack on all of them
    (the costly ones last), so a run cut short still has whole rows (all schemes) of fewer
    seeds; ``thresholds`` and ``rows`` fill as it goes."""
    scale, dataset, model, device = plan.scale, plan.dataset, plan.model, plan.device
    null_config = train_config(scale, dataset, model, NULL_SEED, device)
    for scheme in plan.schemes:  # first, so every attack job finds its scheme's threshold
        thresholds[scheme] = threshold(scheme, scale, null_config)
    for seed in plan.seeds:
        config = train_config(scale, dataset, model, seed, device)
        models: dict[str, Path] = {}
        for scheme in plan.schemes:
            time_left(plan, started)
            try:
                models[scheme], marked = embed(scheme, config, plan.work)
            except (UserError, JobFailed) as exc:  # its cells show one seed fewer
                say(f"embed {scheme} seed {seed} failed: {str(exc).splitlines()[0]}")
                continue
            rows.append(baseline(marked, thresholds[scheme]) | {"scheme": scheme, "seed": seed})
            say(row_line(rows[-1]))
        for cell in run_order(plan.cells):
            for scheme, model_run in models.items():
                time_left(plan, started)
                budget = budget_for(cell, scale)
                row = attack(cell, model_run, budget, device, basis(thresholds[scheme]))
                rows.append(row | {"scheme": scheme, "seed": seed})
                say(row_line(rows[-1]))


def announce(plan: Plan) -> None:
    """The plan on stderr: threads, sizes, what is left out, each attack's budget."""
    say(plan.threads.message())
    say(
        f"{len(plan.schemes)} schemes x {len(plan.seeds)} seeds x {len(plan.cells)} attacks on "
        f"{plan.dataset} + {plan.model} ({plan.scale_name}); excluded: distill (extraction), "
        "detectors, " + "; ".join(f"{k}: {v}" for k, v in EXCLUDED.items())
    )
    for cell in plan.cells:
        say(
            f"  {cell.family:13} {cell.label:28} {cell.name if cell.name != cell.label else ''}"
            f"  budget {budget_for(cell, plan.scale)}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        plan = parse(argv)
    except UserError as exc:  # bad input: one line, exit code 2, nothing written
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if plan.scale_name == "smoke":  # tiny null models must not land in the shared cache
        os.environ.setdefault("WMTUI_CACHE_DIR", str(plan.work / "cache"))
    torch.set_num_threads(plan.threads.count)
    announce(plan)
    if plan.only_list:
        return 0
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    thresholds: dict[str, Any] = {}
    status = 0
    # SIGTERM (a scheduler, timeout) ends it as Ctrl-C does: the table so far is kept
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        measure(plan, started, thresholds, rows)
    except KeyboardInterrupt:
        say("interrupted: the same command continues where this run stopped")
        status = 130
    except OutOfTime:
        say(
            f"--minutes {plan.minutes:g} reached: no new job started; the same command "
            "continues where this run stopped"
        )
    except UserError as exc:  # the engine refused a job: one line, what ran is kept
        say(f"error: {str(exc).splitlines()[0]}")
        status = 2
    finally:  # what was measured is printed and written, even after an interrupt
        if rows:
            command = [
                "python benchmarks/sok_attacks.py",
                *(sys.argv[1:] if argv is None else argv),
            ]
            context = {
                "command": " ".join(command),
                "scale": plan.scale_name,
                "dataset": plan.dataset,
                "model": plan.model,
                "schemes": plan.schemes,
                "seeds": plan.seeds,
                "threads": plan.threads.message(),
                "seconds": round(time.monotonic() - started),
                "budget": dataclasses.asdict(plan.scale),
                "excluded": EXCLUDED,
                "thresholds": thresholds,
                "planned": len(plan.seeds) * len(plan.schemes) * len(plan.cells),
            }
            # in the table's order (the plan's), whatever order they ran in
            labels = [BASELINE, *(c.label for c in plan.cells)]
            rows.sort(key=lambda r: labels.index(r["attack"]) if r["attack"] in labels else 0)
            finish(plan.out, context, rows)
    return status


if __name__ == "__main__":
    sys.exit(main())
