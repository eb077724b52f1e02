"""The robustness matrix's costs side by side in one run: phase reuse, local workers' speed-up,
Ray's overhead per phase, and where a matrix recipe's time goes by phase kind.

A matrix recipe (``--recipe``; by default a synthetic one: ``--schemes`` x ``--attacks`` x
``--seeds``, every scheme embedded once per seed and shared by all its attacks) is run from
scratch into fresh folders and fresh phase caches, with the flags of ``wmtui reproduce``:

1. ``--workers 1`` (local, in this process): **phase reuse** = phases run / phases in the
   matrix (the trials' phases counted one by one; the graph runs each unique phase once:
   a 2-scheme x 3-attack x 2-seed matrix runs 4 embeddings, not 12), and the **cost by phase
   kind** (seconds per train, embed, threshold, attack phase, from ``recipe.json``);
2. ``--workers 2`` (local worker processes): the **speed-up** over run 1 (target >= 1.7 on 2
   quiet cores; both runs use ``--threads`` torch threads per phase, so only the backend
   differs);
3. ``--backend ray --workers 2`` on a private local Ray: its **overhead per phase** against
   run 2, (ray - local) / phases run (target <= 2 s), the cluster's start timed apart.

The runs' matrices must agree (same cells, same numbers): a backend that changed a number
would be a bug, and the script says so. ``--device cuda`` runs every phase on the GPU and
``--address`` joins an existing Ray cluster (a GPU box); ``--recipe sok --scale quick`` is
the SoK matrix on fashion-mnist (hours on 2 cores: give ``--measure reuse`` to time it once).

    .venv/bin/python benchmarks/matrix.py [--scale smoke|small|medium] [--recipe NAME --scale quick]
        [--measure reuse,workers,ray] [--device cpu|cuda] [--address ADDR] [--threads 1]
        [--work DIR]
    .venv/bin/python benchmarks/matrix.py --of-run runs/reproduce/sok-quick [--workers 2]

Not a test: CI runs only ``--scale smoke --measure reuse,workers`` (seconds).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from engine.errors import UserError
from engine.session import Session
from engine.studies.recipe_file import Recipe, load_recipe, recipe_from_mapping
from engine.studies.recipe_matrix import MATRIX_TABLE
from engine.studies.recipes import load_result, plan, prepare_recipe
from engine.threads import current_load, usable_cores

SPEEDUP_TARGET = 1.7
OVERHEAD_TARGET_S = 2.0
MEASURES = ("reuse", "workers", "ray")
#: the synthetic matrices: (schemes, attacks, seeds, train_size, epochs)
SCALES = {
    "smoke": (("pattern", "abstract"), ("jpeg", "weight-quantization"), (0,), 256, 1),
    "small": (
        ("pattern", "abstract"),
        ("jpeg", "weight-quantization", "ft-basic"),
        (0, 1),
        2048,
        2,
    ),
    # phases of seconds, as a real matrix's are (fashion-mnist's take 10 s to minutes): the
    # scale where the workers' speed-up and Ray's overhead per phase mean something
    "medium": (
        ("pattern", "abstract"),
        ("jpeg", "weight-quantization", "ft-basic"),
        (0, 1, 2),
        16384,
        6,
    ),
}


def synthetic_matrix(
    schemes: tuple[str, ...],
    attacks: tuple[str, ...],
    seeds: tuple[int, ...],
    size: int,
    epochs: int,
) -> dict[str, Any]:
    """A matrix recipe on synthetic digits: embed once per (scheme, seed), attack it."""
    return {
        "title": "benchmark matrix",
        "paper": "-",
        "source": "-",
        "train": {
            "dataset": "synthetic",
            "train_size": size,
            "test_size": 256,
            "epochs": epochs,
            "optimizer": "adam",
            "lr": 0.003,
            "eval_every": 10**6,
        },
        "scales": {"quick": {"minutes": 1}},
        "arms": [
            {
                "name": "single",
                "grid": {
                    "seed": list(seeds),
                    "scheme": [{"name": s} for s in schemes],
                    "attack": [{"name": a} for a in attacks],
                },
                "phases": [
                    {"name": "embed", "kind": "embed", "scheme": "{scheme.name}"},
                    {
                        "name": "attack",
                        "kind": "attack",
                        "attack": "{attack.name}",
                        "on": "embed",
                        "budget": {"data_fraction": 0.25, "epochs": 1},
                        "threshold": 0.5,
                        "reference_acc": 0.1,
                    },
                ],
            }
        ],
        "matrix": {
            "rows": "scheme",
            "columns": "attack",
            "phase": "attack",
            "metrics": [
                {"name": "removed-rate", "metric": "removed", "unit": "%"},
                {"name": "accuracy kept", "metric": "test_acc", "base": "test_acc_before"},
            ],
        },
    }


def run_once(
    recipe: Recipe, scale: str, folder: Path, workers: int, backend: str, args: argparse.Namespace
) -> dict[str, Any]:
    """One run from scratch (its own folder and phase cache): wall seconds and its result."""
    from engine.studies.recipe_workers import RunOptions

    shutil.rmtree(folder, ignore_errors=True)
    overrides = {"device": args.device} if args.device else {}
    run = plan(recipe, scale, folder / "out", overrides, folder / "cache")
    options = RunOptions(backend, workers, args.threads, args.address)
    options.check()
    job, _root, sinks = prepare_recipe(run, options)
    started = time.monotonic()
    session = Session(job, sinks).start()
    session.join()
    seconds = time.monotonic() - started
    result = load_result(run.out) or {}
    if session.status != "completed":
        raise SystemExit(f"the {backend} x{workers} run ended {session.status}: {session.error}")
    return {"seconds": seconds, "result": result}


def matrix_numbers(result: dict[str, Any]) -> dict[str, Any]:
    """The matrix cells' means, by name: what two backends must agree on."""
    return {
        c["name"]: c.get("mean") for c in result.get("cells", []) if c.get("table") == MATRIX_TABLE
    }


def by_kind(
    result: dict[str, Any], statuses: tuple[str, ...] = ("completed",)
) -> dict[str, tuple[int, float]]:
    """(phases, seconds) per phase kind, from ``recipe.json``'s phase table: those this run
    computed, or (``statuses`` with ``kept``) also those an earlier sitting of it did."""
    split: dict[str, list[float]] = defaultdict(list)
    for item in ((result.get("phases") or {}).get("items") or {}).values():
        if item.get("status") in statuses:
            split[str(item.get("kind"))].append(float(item.get("seconds") or 0.0))
    return {kind: (len(times), sum(times)) for kind, times in split.items()}


def made_run_lines(result: dict[str, Any], workers: int) -> list[str]:
    """What a run already made cost, sittings and all (``--of-run``): the phases in its
    matrix, those computed, their time by kind, and that time spread over ``workers``."""
    counts = result.get("phases") or {}
    split = by_kind(result, ("completed", "kept"))
    total = sum(seconds for _, seconds in split.values())
    lines = [
        f"{result.get('recipe')} ({result.get('scale')}): {counts.get('in_trials', 0)} phases "
        f"in its trials, {counts.get('total', 0)} unique, "
        f"{sum(n for n, _ in split.values())} computed; complete: {bool(result.get('complete'))}",
        f"phase time {total / 60:.1f} min: {total / 60 / workers:.1f} min on {workers} workers",
    ]
    for kind, (count, seconds) in sorted(split.items(), key=lambda item: -item[1][1]):
        share = seconds / total if total else 0.0
        mean = seconds / count if count else 0.0
        lines.append(
            f"  {kind}: {count} phase(s), {seconds / 60:.1f} min ({share:.0%}), {mean:.1f} s each"
        )
    return lines


def reuse(result: dict[str, Any]) -> tuple[int, int]:
    counts = result.get("phases") or {}
    return int(counts.get("ran", 0)), int(counts.get("in_trials", 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scale", default="smoke", help="smoke|small|medium (synthetic) or the recipe's"
    )
    parser.add_argument("--recipe", default="", help="a matrix recipe (name or TOML) instead")
    parser.add_argument("--measure", default=",".join(MEASURES), help="reuse,workers,ray")
    parser.add_argument("--device", default="", help="cpu or cuda (default: the recipe's)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per phase")
    parser.add_argument("--work", type=Path, default=None, help="folder for the runs")
    parser.add_argument(
        "--of-run",
        type=Path,
        default=None,
        help="print what a run already made (wmtui reproduce's OUT) cost, running nothing",
    )
    parser.add_argument("--workers", type=int, default=2, help="with --of-run: spread over")
    args = parser.parse_args(argv)
    if args.of_run is not None:
        made = load_result(args.of_run)
        if made is None:
            print(
                f"error: {args.of_run}: no recipe.json (not a recipe's run folder)", file=sys.stderr
            )
            return 2
        print("\n".join(made_run_lines(made, max(1, args.workers))))
        return 0
    measures = [m.strip() for m in args.measure.split(",") if m.strip()]
    for name in measures:
        if name not in MEASURES:
            parser.error(f"--measure: unknown {name!r}; known: {', '.join(MEASURES)}")
    try:
        if args.recipe:
            recipe, scale = load_recipe(args.recipe), args.scale
            if recipe.matrix is None:
                parser.error(f"--recipe {args.recipe}: it has no [matrix] table")
        else:
            if args.scale not in SCALES:
                parser.error(f"--scale must be one of {', '.join(SCALES)} without --recipe")
            recipe = recipe_from_mapping(synthetic_matrix(*SCALES[args.scale]), "bench-matrix")
            scale = "quick"
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="wmtui-matrix-"))
    print(f"matrix: {recipe.name} ({scale}), {usable_cores()} usable cores, load {current_load()}")

    from engine.threads import apply_threads

    apply_threads(args.threads)  # the in-process run uses as many threads as each worker
    lines: list[str] = []
    one = run_once(recipe, scale, work / "local-1", 1, "local", args)
    ran, planned = reuse(one["result"])
    if "reuse" in measures:
        ratio = ran / planned if planned else float("nan")
        lines.append(f"phase reuse: {ran} phases run / {planned} in the matrix = {ratio:.3f}")
        lines.append(f"1 worker: {one['seconds']:.1f} s wall")
        for kind, (count, seconds) in sorted(by_kind(one["result"]).items()):
            lines.append(f"  {kind}: {count} phase(s), {seconds:.1f} s")
    two = None
    if "workers" in measures or "ray" in measures:
        two = run_once(recipe, scale, work / "local-2", 2, "local", args)
        speedup = one["seconds"] / two["seconds"]
        verdict = "ok" if speedup >= SPEEDUP_TARGET else f"below {SPEEDUP_TARGET}"
        lines.append(f"2 local workers: {two['seconds']:.1f} s; speed-up {speedup:.2f} ({verdict})")
        same = matrix_numbers(two["result"]) == matrix_numbers(one["result"])
        lines.append(f"  the matrix equals the 1-worker run's: {'yes' if same else 'NO'}")
    if "ray" in measures and two is not None:
        ray_run = run_once(recipe, scale, work / "ray-2", 2, "ray", args)
        overhead = (ray_run["seconds"] - two["seconds"]) / max(ran, 1)
        verdict = "ok" if overhead <= OVERHEAD_TARGET_S else f"above {OVERHEAD_TARGET_S} s"
        lines.append(
            f"ray, 2 at a time: {ray_run['seconds']:.1f} s (with its start); "
            f"overhead {overhead:.2f} s per phase ({verdict})"
        )
        same = matrix_numbers(ray_run["result"]) == matrix_numbers(one["result"])
        lines.append(f"  the matrix equals the local run's: {'yes' if same else 'NO'}")
    print("\n".join(lines))
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
