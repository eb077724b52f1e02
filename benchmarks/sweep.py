"""Sweep backends side by side in one run: local workers' speedup, Ray's per-trial overhead.

One 8-trial grid (a pattern watermark embedded in LeNet-5 on synthetic digits, 2 seeds x
4 targets) is run three times from scratch, each into a fresh folder:

1. ``local``, 1 worker;
2. ``local``, 2 workers (the speedup over 1; target >= 1.7x on 2 cores);
3. ``ray``, 2 trials at a time on a private local Ray (the backend's own ``ray.init``,
   timed apart), against run 2: (ray - local) / trials is Ray's overhead per trial
   (target <= 2 s), with and without the cluster's start.

Every run uses the same per-trial thread count (``--threads``, default 1), so that the
trials' own work is identical and only the backends differ. The three runs' results must
agree (same keys, same metrics): a backend that changed a number would be a bug.

    .venv/bin/python benchmarks/sweep.py [--train-size 8192] [--epochs 3] [--threads 1]
        [--no-ray]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.studies.sweep_backends import run_sweep
from engine.studies.sweep_results import read_rows
from engine.studies.sweeps import grid_from_mapping, plan_sweep
from engine.threads import current_load, usable_cores

SPEEDUP_TARGET = 1.7
OVERHEAD_TARGET_S = 2.0


def grid(train_size: int, epochs: int) -> dict[str, Any]:
    return {
        "train": {
            "dataset": "synthetic",
            "train_size": train_size,
            "test_size": 512,
            "epochs": epochs,
            "optimizer": "adam",
            "lr": 0.003,
            "device": "cpu",
            "eval_every": 1000,
        },
        "phases": [
            {
                "name": "embed",
                "kind": "embed",
                "scheme": "pattern",
                "params": {"trigger": "square", "target_label": "{target}"},
            }
        ],
        "axes": {"seed": [0, 1], "target": [1, 3, 5, 7]},
    }


def timed(label: str, raw: dict[str, Any], out: Path, **options: Any) -> tuple[float, Any]:
    plan = plan_sweep(grid_from_mapping(raw, "bench"), out)
    started = time.monotonic()
    outcome = run_sweep(plan, **options)
    seconds = time.monotonic() - started
    if outcome.status != "completed":
        sys.exit(f"{label}: the sweep ended {outcome.status}: {outcome.summary}")
    rows = {r["trial"]: r["metrics"] for r in read_rows(out)}
    trial_s = sum(r["seconds"] or 0 for r in read_rows(out)) / max(1, len(rows))
    print(f"{label:34} {seconds:7.1f} s   ({trial_s:.1f} s per trial inside)", flush=True)
    return seconds, rows


def start_ray() -> tuple[float, Any]:
    """The backend's own private Ray (what `wmtui sweep --backend ray` starts), timed."""
    import ray

    from engine.studies.sweep_ray import connect

    started = time.monotonic()
    temp = connect(ray, None)
    return time.monotonic() - started, temp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per trial")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray backend")
    args = parser.parse_args()
    raw = grid(args.train_size, args.epochs)
    trials = len(grid_from_mapping(raw, "bench").trials)
    print(
        f"sweep benchmark: {trials} trials (embed pattern, lenet5, synthetic "
        f"{args.train_size} images x {args.epochs} epochs), {args.threads} thread(s) per "
        f"trial; {usable_cores()} cores, load {current_load():.1f} at the start",
        flush=True,
    )
    work = Path(tempfile.mkdtemp(prefix="wmtui-bench-sweep-"))
    os.environ.setdefault("WMTUI_DATA_DIR", str(work / "data"))
    try:
        one, base = timed("local, 1 worker", raw, work / "w1", workers=1, threads=args.threads)
        two, rows = timed("local, 2 workers", raw, work / "w2", workers=2, threads=args.threads)
        assert rows == base, "1 and 2 workers disagree"
        speedup = one / two
        verdict = "meets" if speedup >= SPEEDUP_TARGET else "misses"
        print(f"speedup of 2 workers over 1: {speedup:.2f}x ({verdict} {SPEEDUP_TARGET}x)")
        if not args.no_ray:
            _ray(raw, work, two, trials, args.threads, base)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"load at the end: {current_load():.1f} (other processes share these cores)")


def _ray(
    raw: dict[str, Any], work: Path, local_s: float, trials: int, threads: int, base: Any
) -> None:
    try:
        import ray
    except ImportError:
        print("ray backend: skipped (pip install 'wmtui[ray]')")
        return
    init_s, temp = start_ray()
    try:
        ray_s, rows = timed(
            "ray, 2 at a time (Ray started)", raw, work / "ray", workers=2, threads=threads
        )
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)
    assert rows == base, "ray and local disagree"
    per_trial = (ray_s - local_s) / trials
    with_init = (ray_s + init_s - local_s) / trials
    verdict = "meets" if per_trial <= OVERHEAD_TARGET_S else "misses"
    print(f"ray start (ray.init, private local cluster): {init_s:.1f} s")
    print(
        f"ray overhead per trial vs 2 local workers: {per_trial:+.2f} s "
        f"({verdict} <= {OVERHEAD_TARGET_S:.0f} s); {with_init:+.2f} s counting the start"
    )


if __name__ == "__main__":
    main()
