"""Watermark schemes against the issue's must-hold numbers, printed as a markdown table.

For each dataset: a clean model, then one embedding per scheme with the same seed, epochs
and optimiser (so accuracy differences are the watermark's cost), each verified on held-out
key samples; then 100 freshly generated keys per scheme verified against the clean model and
against that scheme's watermarked model (whose key they are not): false ownership claims.
Fresh keys are verified on the first ``--fresh-test`` test images (2000 by default; the
binomial test stays calibrated at any size, and 100 keys x 2 models x 9 decoy stamps over all
10,000 images took 25 minutes per scheme on one core).

    .venv/bin/python benchmarks/watermarks.py --dataset fashion-mnist --dataset synthetic

Runs one model at a time on one thread each (the CPU may be shared); ~1 min per model on
a 2-core CPU. Not a test: CI never runs it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from engine.config import TrainConfig
from engine.data import load_dataset
from engine.jobs import embed_job, new_run_manifest, resolve_device, train_job, verify_run
from engine.jobs.fresh_keys import fresh_values
from engine.runs import RunDir
from engine.session import Session
from engine.watermarks import KeyContext, get_scheme, parse_scheme_params

# (label, scheme, flags) as typed on the command line
EMBEDDINGS: list[tuple[str, str, dict[str, Any]]] = [
    ("pattern/TEST", "pattern", {"trigger": "text"}),
    ("pattern/square", "pattern", {"trigger": "square"}),
    ("pattern/noise", "pattern", {"trigger": "noise"}),
    ("abstract (100)", "abstract", {}),
    ("newlabel", "newlabel", {}),
    ("unrelated", "unrelated", {}),
]
#: the unrelated key's source per owner dataset (fresh unrelated keys use the same one)
UNRELATED_SOURCE = {"fashion-mnist": "synthetic", "synthetic": "fashion-mnist"}


def with_source(scheme: str, values: dict[str, Any], dataset: str) -> dict[str, Any]:
    if scheme == "unrelated" and dataset in UNRELATED_SOURCE:
        return {"source": UNRELATED_SOURCE[dataset], **values}
    return values


def run_job(job: Any, run: RunDir) -> dict[str, Any]:
    session = Session(job, [run.event_sink()]).start()
    for event in session.events():
        if event.kind == "error":
            print(f"  error: {event.message}", file=sys.stderr)
    if session.status != "completed":
        raise SystemExit(f"{run.path}: {session.status} ({session.error})")
    return session.summary


def flags(values: dict[str, Any]) -> str:
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in values.items())


def bench_dataset(
    dataset: str,
    epochs: int,
    seed: int,
    out: Path,
    n_fresh: int,
    only: list[str] | None = None,
    fresh_test: int = 2000,
) -> list[dict]:
    base = {"dataset": dataset, "epochs": epochs, "seed": seed, "device": "cpu"}
    config = TrainConfig.from_mapping(base)
    started = time.monotonic()
    clean_dir = out / f"{dataset}-clean"
    summary_file = clean_dir / "summary.json"
    if only and summary_file.is_file():  # a partial re-run reuses the clean model
        clean = json.loads(summary_file.read_text())
    else:
        clean = run_job(
            train_job(
                config,
                RunDir.create(clean_dir, new_run_manifest(config, "train"), overwrite=True),
            ),
            RunDir(clean_dir),
        )
    print(
        f"{dataset} clean: {clean['test_acc']:.4f} ({time.monotonic() - started:.0f} s)",
        file=sys.stderr,
    )
    device = resolve_device("cpu")
    data = load_dataset(dataset, device=device).data
    clean_model, _ = RunDir(clean_dir).load_model(device)
    rows = []
    seen_schemes: set[str] = set()
    for label, scheme_name, values in EMBEDDINGS:
        if only and not any(label.startswith(prefix) for prefix in only):
            continue
        values = with_source(scheme_name, values, dataset)
        started = time.monotonic()
        run_dir = out / f"{dataset}-{label.split()[0].replace('/', '-')}"
        params = parse_scheme_params(scheme_name, values)
        run = RunDir.create(run_dir, new_run_manifest(config, "embed"), overwrite=True)
        shutil.rmtree(run_dir / "key", ignore_errors=True)
        run_job(embed_job(config, scheme_name, params, run), run)
        verdict = verify_run(run_dir, device="cpu")
        row = {
            "dataset": dataset,
            "label": label,
            "scheme": scheme_name,
            "command": f"wmtui embed --scheme {scheme_name} {flags(values)} --dataset {dataset} "
            f"--epochs {epochs} --seed {seed} --out RUN; wmtui verify --run RUN",
            "clean_acc": clean["test_acc"],
            "test_acc": verdict["test_acc"],
            "delta": (verdict["test_acc"] - clean["test_acc"]) * 100,
            "retention": verdict["retention"],
            "n_key": verdict["n_key"],
            "p_value": verdict["p_value"],
            "log10_p": verdict["log10_p_value"],
            "verified": verdict["verified"],
            "null_rate": verdict["null_rate"],
            "null_reason": verdict["null_reason"],
            "seconds": round(time.monotonic() - started),
        }
        if scheme_name not in seen_schemes:
            seen_schemes.add(scheme_name)
            marked, _ = RunDir(run_dir).load_model(device)
            fresh_data = data.limit(0, fresh_test)
            row |= false_claims(scheme_name, fresh_data, clean_model, marked, n_fresh, seed)
            row["fresh_seconds"] = round(time.monotonic() - started) - row["seconds"]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    return rows


def false_claims(
    scheme_name: str,
    data: Any,
    clean: torch.nn.Module,
    marked: torch.nn.Module,
    n_fresh: int,
    seed: int,
) -> dict[str, Any]:
    """Fresh keys (never embedded anywhere) against the clean and the watermarked model."""
    scheme = get_scheme(scheme_name)
    counts = {"clean": 0, "marked": 0}
    lowest = {"clean": 0.0, "marked": 0.0}
    for i in range(n_fresh):
        values = with_source(scheme_name, fresh_values(scheme_name, i, data.num_classes), data.name)
        params = parse_scheme_params(scheme_name, values)
        key = scheme.keygen(params, KeyContext(data, "lenet5", seed + 10_000 + i))
        for name, model in (("clean", clean), ("marked", marked)):
            verdict = scheme.verify(model, key, data, 1e-3, test_acc=False)
            counts[name] += verdict.verified
            lowest[name] = min(lowest[name], verdict.log10_p_value)
    return {
        "fresh": n_fresh,
        "fresh_vs_clean": counts["clean"],
        "fresh_vs_marked": counts["marked"],
        "fresh_min_log10_p_clean": lowest["clean"],
        "fresh_min_log10_p_marked": lowest["marked"],
    }


def markdown(rows: list[dict]) -> str:
    head = (
        "| dataset | key | test acc | clean acc | Δ (points) | held-out retention | n key "
        "| p-value | verified | fresh keys verified vs clean | vs watermarked |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for r in rows:
        p = f"1e{r['log10_p']:.0f}" if r["p_value"] == 0.0 else f"{r['p_value']:.2g}"
        fresh_c = f"{r['fresh_vs_clean']}/{r['fresh']}" if "fresh" in r else "(as above)"
        fresh_m = f"{r['fresh_vs_marked']}/{r['fresh']}" if "fresh" in r else "(as above)"
        lines.append(
            f"| {r['dataset']} | {r['label']} | {100 * r['test_acc']:.2f}% "
            f"| {100 * r['clean_acc']:.2f}% | {r['delta']:+.2f} | {100 * r['retention']:.2f}% "
            f"| {r['n_key']} | {p} | {'yes' if r['verified'] else 'no'} | {fresh_c} | {fresh_m} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", action="append", help="fashion-mnist, synthetic, ...")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fresh", type=int, default=100, help="fresh keys per scheme")
    parser.add_argument("--out", type=Path, default=Path("runs/bench-watermarks"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--fresh-test",
        type=int,
        default=2000,
        help="test images each fresh key is verified on (0: all; the owner's keys use all)",
    )
    parser.add_argument(
        "--only", action="append", help="keys whose label starts with this (e.g. newlabel)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict] = []
    for dataset in args.dataset or ["fashion-mnist", "synthetic"]:
        rows += bench_dataset(
            dataset, args.epochs, args.seed, args.out, args.fresh, args.only, args.fresh_test
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1))
    print(markdown(rows))
    bad = [r for r in rows if not (r["verified"] and abs(r["delta"]) <= 1.0)]
    if bad or any(r.get("fresh_vs_clean") or r.get("fresh_vs_marked") for r in rows):
        print("\nsome must-hold numbers do not hold (see table)", file=sys.stderr)


if __name__ == "__main__":
    main()
