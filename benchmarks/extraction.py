"""The extraction table: schemes built to survive model stealing, against the stealing.

Lukas et al. (SoK, IEEE S&P 2022) find extraction the strongest attack family, and a line of
schemes claims to survive it: entangled watermarks (EWE, Jia et al. 2021), frontier
stitching (Le Merrer et al. 2019), BlackMarks (Chen et al. 2019) and DAWN (Szyller et al.
2021), which marks the API rather than the model. This script measures them, beside the
plain trigger schemes, against every extraction attack we have and the STRIP-filtered evasion,
with the SoK's success rule, and decides the claims from what it measured
(``extraction_claims.py``).

For each seed (0, 1, 2) one model per scheme on fashion-mnist + lenet5 (3 epochs, the full
training set): trained with its key from scratch, or, for the schemes that make their keys
from a trained model (frontier, blackmarks) or only serve one (dawn), embedded into that
seed's clean model. Each scheme's threshold comes from the ``threshold`` job (5 null models,
seeds 100..104, shared with ``wmtui threshold`` and ``sok_attacks.py`` through the cache).
Then every attack runs on every model, one refereed ``attack`` job each; the cells give the
removed-rate, the stolen model's test accuracy and the key accuracy left, mean ± sd.

The thief's budget (WRT's attacker: a third of the training set,
``wrt/training/datasets/cifar10.py``): retraining, cross-retraining, smooth retraining,
distillation and STRIP's calibration use that third as their transfer set; knockoff queries
``synthetic`` images (another distribution: WRT's knockoff uses ImageNet for CIFAR-10, which
an offline machine lacks). ``--scale quick`` trains stolen models for 3 epochs (WRT's
configs train 30-60: their accuracy is lower than a full run's, said in README);
``--scale smoke`` (synthetic data, 1 seed, 2 schemes, 2 attacks) checks the script.

    python benchmarks/extraction.py [--scale quick|smoke] [--schemes ewe,pattern]
        [--attacks retraining,knockoff] [--seeds 0] [--work DIR] [--out FILE] [--minutes 60]

Resumable: every model and attack is a run folder under ``--work`` (by default the SoK
table's, ``runs/bench-sok-quick``, whose pattern, abstract and newlabel models are the same
ones) named by a hash of its configuration; a rerun reuses the completed ones. Not a test:
CI never runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from extraction_claims import claims_text, dawn_claims, ewe_claim
from sok_attacks import (
    attack,
    baseline,
    basis,
    embed,
    names,
    run_or_reuse,
    say,
    seed_list,
    threshold,
)
from sok_plan import EMBED_EVAL_EVERY, Cell, digest, train_config
from sok_table import BASELINE, BASELINE_FAMILY, aggregate, row_line, write_outputs

from engine.attacks import ATTACKS
from engine.errors import ConfigError, UserError, unknown_name
from engine.jobs import JobFailed, JobSpec
from engine.threads import choose_threads
from engine.watermarks import SCHEMES as SCHEME_REGISTRY

SCHEMES = ("pattern", "abstract", "newlabel", "ewe", "frontier", "blackmarks", "dawn")
ATTACK_NAMES = (
    "retraining",
    "cross-retraining",
    "knockoff",
    "smooth-retraining",
    "distill",
    "strip-evasion",
)
THIRD = round(1 / 3, 4)  # WRT's attacker holds a third of the training set


@dataclasses.dataclass(frozen=True)
class Scale:
    dataset: str
    train_size: int
    test_size: int
    epochs: int  # the owners' models and the null models
    null_models: int
    attack_epochs: int
    seeds: tuple[int, ...]
    schemes: tuple[str, ...]
    attacks: tuple[str, ...]
    transfer_count: int  # knockoff's out-of-distribution images


SCALES = {
    "quick": Scale("fashion-mnist", 0, 0, 3, 5, 3, (0, 1, 2), SCHEMES, ATTACK_NAMES, 20_000),
    "smoke": Scale(
        "synthetic", 3000, 500, 2, 2, 1, (0,), ("pattern", "dawn"), ATTACK_NAMES[:2], 2000
    ),
}


def budget_for(name: str, scale: Scale) -> dict[str, Any]:
    """The thief's budget for attack ``name`` (see the module docstring)."""
    budget: dict[str, Any] = {"data_fraction": THIRD, "epochs": scale.attack_epochs}
    if name == "knockoff":
        return budget | {
            "data_fraction": 0.0,
            "unlabeled": "synthetic",
            "unlabeled_count": scale.transfer_count,
        }
    if name == "distill":  # its transfer set is an unlabelled one: as many in-distribution images
        return budget | {
            "data_fraction": 0.0,
            "unlabeled": scale.dataset,
            "unlabeled_count": scale.transfer_count,
        }
    return budget


def needs_clean_model(scheme: str) -> bool:
    return bool(getattr(SCHEME_REGISTRY.get(scheme).factory, "needs_trained_model", False))


def clean_model(config: dict[str, Any], work: Path) -> Path:
    """The seed's unmarked model, the starting point of the schemes embedded ``--from`` it."""
    weights = {k: v for k, v in config.items() if k not in ("eval_every", "device")}
    folder = work / f"train-s{config['seed']}-{digest(weights)}"
    spec = JobSpec.train(**(config | {"eval_every": EMBED_EVAL_EVERY}))
    summary, reused = run_or_reuse(spec, folder)
    say(
        f"clean model seed {config['seed']}: test acc {summary.get('test_acc')}"
        + (" (reused)" if reused else "")
    )
    return folder


def embed_from(scheme: str, source: Path, config: dict[str, Any], work: Path) -> tuple[Path, dict]:
    """A scheme embedded into the seed's clean model (its keys come from that model)."""
    config = config | {"eval_every": EMBED_EVAL_EVERY}
    weights = {k: v for k, v in config.items() if k not in ("eval_every", "device")}
    folder = work / f"embed-{scheme}-s{config['seed']}-{digest([scheme, source.name, weights])}"
    spec = JobSpec.embed(scheme, config=config, from_run=source)
    summary, reused = run_or_reuse(spec, folder)
    say(
        f"embed {scheme} seed {config['seed']} from {source.name}" + (" (reused)" if reused else "")
    )
    return folder, summary


@dataclasses.dataclass
class Plan:
    scale_name: str
    scale: Scale
    schemes: list[str]
    attacks: list[str]
    seeds: list[int]
    work: Path
    out: Path
    device: str
    minutes: float
    only_list: bool
    threads: Any


def parse(argv: Sequence[str] | None) -> Plan:
    """Every check of the command line, before anything runs or is written."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="quick")
    parser.add_argument("--schemes", default="")
    parser.add_argument("--attacks", default="")
    parser.add_argument("--seeds", default="")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--minutes", type=float, default=0)
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    schemes = names(args.schemes) or list(scale.schemes)
    for scheme in schemes:
        if scheme not in SCHEME_REGISTRY:
            raise unknown_name("--schemes entry", scheme, SCHEMES)
    attacks = names(args.attacks) or list(scale.attacks)
    for name in attacks:
        if name not in ATTACKS:
            raise unknown_name("--attacks entry", name, ATTACK_NAMES)
    if not 0 <= args.minutes < float("inf"):
        raise ConfigError(f"--minutes must be >= 0, got {args.minutes:g}")
    # the SoK table's folder: its pattern, abstract and newlabel models are these very ones
    work = args.work or Path("runs") / f"bench-sok-{args.scale}"
    return Plan(
        args.scale,
        scale,
        schemes,
        attacks,
        seed_list(args.seeds) if args.seeds else list(scale.seeds),
        work,
        args.out or work / "table.md",
        args.device,
        args.minutes,
        args.list,
        choose_threads(args.threads),
    )


class OutOfTime(Exception):
    pass


def measure(plan: Plan, started: float, thresholds: dict[str, Any], rows: list[dict]) -> None:
    """Thresholds, then seed by seed: the models, then every attack on all of them."""
    scale = plan.scale

    def time_left() -> None:
        if plan.minutes and time.monotonic() - started > 60 * plan.minutes:
            raise OutOfTime

    base = train_config_of(plan, 100)
    for scheme in plan.schemes:
        thresholds[scheme] = threshold(scheme, scale, base)  # type: ignore[arg-type]
    for seed in plan.seeds:
        config = train_config_of(plan, seed)
        clean = None
        models: dict[str, Path] = {}
        for scheme in plan.schemes:
            time_left()
            try:
                if needs_clean_model(scheme):
                    clean = clean or clean_model(config, plan.work)
                    models[scheme], marked = embed_from(scheme, clean, config, plan.work)
                else:
                    models[scheme], marked = embed(scheme, config, plan.work)
            except (UserError, JobFailed) as exc:
                say(f"embed {scheme} seed {seed} failed: {str(exc).splitlines()[0]}")
                continue
            rows.append(baseline(marked, thresholds[scheme]) | {"scheme": scheme, "seed": seed})
            say(row_line(rows[-1]))
        for name in plan.attacks:
            cell = Cell(name, ATTACKS.get(name).family, name)
            for scheme, model_run in models.items():
                time_left()
                row = attack(
                    cell, model_run, budget_for(name, scale), plan.device, basis(thresholds[scheme])
                )
                rows.append(row | {"scheme": scheme, "seed": seed})
                say(row_line(rows[-1]))


def train_config_of(plan: Plan, seed: int) -> dict[str, Any]:
    scale = plan.scale
    return train_config(scale, scale.dataset, "lenet5", seed, plan.device)  # type: ignore[arg-type]


def cell_text(cell: dict[str, Any] | None) -> str:
    """``1/3 · 84.1 ± 0.5 · wm 12.0 ± 3.1``: removed over judged seeds, the stolen model's
    test accuracy and the key accuracy left (%)."""
    if cell is None or not cell["acc"]:
        return "n/a" if cell and cell["problems"] else "—"
    rate = f"{cell['removed']}/{cell['judged']}" if cell["judged"] else "?"
    wm = (
        ""
        if cell["wm_mean"] is None
        else f" · wm {100 * cell['wm_mean']:.1f} ± {100 * cell['wm_sd']:.1f}"
    )
    return f"{rate} · {100 * cell['acc_mean']:.1f} ± {100 * cell['acc_sd']:.1f}{wm}"


def table_text(table: list[dict[str, Any]], schemes: Sequence[str]) -> str:
    lines = [
        "| attack | " + " | ".join(schemes) + " | mean cost (s) |",
        "|---|" + "---|" * len(schemes) + "---:|",
    ]
    for entry in table:
        cells = " | ".join(cell_text(entry["cells"].get(s)) for s in schemes)
        seconds = "-" if entry["seconds"] is None else f"{entry['seconds']:.0f}"
        lines.append(f"| {entry['attack']} | {cells} | {seconds} |")
    return "\n".join(lines)


def finish(plan: Plan, context: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    labels = [BASELINE, *plan.attacks]
    rows.sort(key=lambda r: labels.index(r["attack"]) if r["attack"] in labels else 0)
    table = aggregate(rows, plan.schemes)
    extraction = [a for a in plan.attacks if a != "strip-evasion"]
    dawn = context["thresholds"].get("dawn") or {}
    claims = [ewe_claim(rows), *dawn_claims(rows, extraction, dawn.get("threshold"))]
    attacked = [r for r in rows if r["family"] != BASELINE_FAMILY]
    head = (
        f"`{context['command']}`: {plan.scale.dataset} + lenet5, seeds "
        f"{', '.join(map(str, plan.seeds))}, {context['seconds'] / 60:.1f} min, "
        f"{context['threads']}; {len(attacked)} of {context['planned']} attacks"
    )
    legend = (
        "Cells: removed in k of n seeds (the SoK's rule: test accuracy within 5 points of the "
        "unmarked models' and key accuracy at or below the threshold) · the model's test "
        "accuracy after the attack · key accuracy after it (wm), mean ± sd (%). The first row "
        "judges the watermarked models themselves."
    )
    failed = [
        f"{r['scheme']}/{r['attack']} s{r['seed']}: {r.get('reason', '')}"
        for r in rows
        if r["status"] != "completed"
    ]
    text = "\n\n".join(
        [head, table_text(table, plan.schemes), legend, "Claims:\n" + claims_text(claims)]
        + (["Not completed: " + "; ".join(failed)] if failed else [])
    )
    print(text, flush=True)
    write_outputs(plan.out, context | {"rows": rows, "table": table, "claims": claims}, text)
    say(f"written: {plan.out} and its JSON")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        plan = parse(argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if plan.scale_name == "smoke":  # tiny null models must not land in the shared cache
        os.environ.setdefault("WMTUI_CACHE_DIR", str(plan.work / "cache"))
    torch.set_num_threads(plan.threads.count)
    say(plan.threads.message())
    for name in plan.attacks:
        say(f"  {name:18} budget {budget_for(name, plan.scale)}")
    if plan.only_list:
        return 0
    started = time.monotonic()
    rows: list[dict[str, Any]] = []
    thresholds: dict[str, Any] = {}
    status = 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        measure(plan, started, thresholds, rows)
    except KeyboardInterrupt:
        say("interrupted: the same command continues where this run stopped")
        status = 130
    except OutOfTime:
        say(f"--minutes {plan.minutes:g} reached: the same command continues from here")
    except UserError as exc:
        say(f"error: {str(exc).splitlines()[0]}")
        status = 2
    finally:
        if rows:
            command = ["python benchmarks/extraction.py", *(sys.argv[1:] if argv is None else argv)]
            context = {
                "command": " ".join(command),
                "scale": plan.scale_name,
                "seeds": plan.seeds,
                "schemes": plan.schemes,
                "threads": plan.threads.message(),
                "seconds": round(time.monotonic() - started),
                "thresholds": thresholds,
                "planned": len(plan.seeds) * len(plan.schemes) * len(plan.attacks),
            }
            finish(plan, context, rows)
    return status


if __name__ == "__main__":
    sys.exit(main())
