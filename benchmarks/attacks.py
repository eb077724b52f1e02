"""Attack benchmarks: ft-basic step throughput vs a bare PyTorch loop, and the must-hold table.

``throughput`` (default): REFIT's FT-Basic run through the engine (attack -> AttackEnv ->
TrainLoop) against a bare PyTorch fine-tuning loop doing the same work: same model
initialisation, same uint8 data on the device, batch 100, SGD(0.05, momentum 0.9, weight decay
5e-4) with the x0.9-every-500-steps decay, and the same precision (bf16 autocast +
channels_last on CUDA, as the engine uses there; fp32 on CPU). Runs alternate so machine load
hits both; medians of the repeats are reported. The referee is off (no probes) so the ratio
is the cost of the attack path and loop themselves.

    python benchmarks/attacks.py [throughput] [--steps 300] [--repeats 5] [--device cuda]

``table``: the issue's must-hold figures on a watermarked run (fashion-mnist, say): ft-basic
and the low-LR ftal baseline at 20% labelled data, and ftau with 0/10/20% labelled data plus
an out-of-distribution unlabelled source. Needs the run's key and the schemes'
``engine.watermarks.load_key_probes`` for retention.

    python benchmarks/attacks.py table --run RUN [--unlabeled synthetic] [--epochs 10]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from engine.attacks import AttackEnv, AttackerBudget, attack_job, build_attacker_data, make_attack
from engine.attacks.job import referee_trainer
from engine.data import as_float, load_dataset
from engine.jobs import resolve_device
from engine.models import Architecture, build_model
from engine.session import JobContext

BATCH = 100


def bare_loop(model: nn.Module, x_all: torch.Tensor, y_all: torch.Tensor, steps: int) -> float:
    """FT-Basic written directly in PyTorch: the yardstick."""
    amp = x_all.device.type == "cuda"
    if amp:
        model.to(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    per_pass = len(x_all) // BATCH
    perm = torch.randperm(len(x_all), device=x_all.device)
    start = time.perf_counter()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 0.05 * 0.9 ** (step // 500)
        j = step % per_pass
        if j == 0 and step:
            perm = torch.randperm(len(x_all), device=x_all.device)
        idx = perm[j * BATCH : (j + 1) * BATCH]
        x = as_float(x_all[idx])
        if amp:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss.item()
    return steps * BATCH / (time.perf_counter() - start)


def engine_attack(model: nn.Module, arch: Architecture, data: Any, steps: int) -> float:
    """FT-Basic through the attack path: make_attack -> AttackEnv -> TrainLoop."""
    device = next(model.parameters()).device
    budget = AttackerBudget(data_fraction=1.0, steps=steps, seed=0)
    attacker = build_attacker_data(budget, data, seed=0)
    ctx = JobContext()
    env = AttackEnv(ctx, device, 0, referee_trainer(ctx, "ft-basic", [], 10**9, 0))
    attack = make_attack("ft-basic")
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    attack.run(model, arch, attacker, env)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * BATCH / (time.perf_counter() - start)


def throughput(args: argparse.Namespace) -> None:
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, device=device, train_size=20_000, test_size=100).data
    arch = Architecture(args.model, data.shape, data.num_classes)
    torch.manual_seed(0)
    template = build_model(arch).to(device)
    runs: dict[str, list[float]] = {"engine": [], "bare": []}
    for repeat in range(args.repeats + 1):  # the first round warms caches and is dropped
        for name in ("engine", "bare"):
            model = copy.deepcopy(template)
            if name == "engine":
                speed = engine_attack(model, arch, data, args.steps)
            else:
                speed = bare_loop(model, data.train_x, data.train_y, args.steps)
            if repeat:
                runs[name].append(speed)
    engine, bare = statistics.median(runs["engine"]), statistics.median(runs["bare"])
    print(
        f"ft-basic attack step throughput: device {device}, {args.model}, {data.name} "
        f"{tuple(data.shape)}, batch {BATCH}, {args.steps} steps x {args.repeats} repeats, "
        f"torch threads {torch.get_num_threads()}"
    )
    for name, value in (("engine", engine), ("bare", bare)):
        each = ", ".join(f"{v:,.0f}" for v in runs[name])
        print(f"{name + ' loop:':13}{value:10,.0f} images/s  (runs: {each})")
    print(f"ratio engine/bare: {engine / bare:.3f}  (target >= 0.95)")


TABLE = [
    ("ft-basic", {}, 0.2, False),
    ("finetune", {"mode": "ftal", "lr": 0.001}, 0.2, False),
    ("ftau", {}, 0.0, True),
    ("ftau", {}, 0.1, True),
    ("ftau", {}, 0.2, True),
]


def table(args: argparse.Namespace) -> None:
    """Run the must-hold configurations on ``--run`` and print test accuracy and retention."""
    rows = []
    for name, params, fraction, unlabeled in TABLE:
        budget = AttackerBudget.from_mapping(
            {
                "data_fraction": fraction,
                "unlabeled": args.unlabeled if unlabeled else "",
                "unlabeled_count": args.unlabeled_count if unlabeled else 0,
                "epochs": args.epochs,
            }
        )
        job = attack_job(
            Path(args.run), name, params, budget, None, device=args.device, eval_every=10**9
        )
        summary = job(JobContext())
        retention = summary["after"]["retention"]
        rows.append(
            {
                "attack": name + (f" {params['mode']} lr {params['lr']}" if params else ""),
                "labelled": fraction,
                "before": summary["before"]["test_acc"],
                "test_acc": summary["test_acc"],
                "retention": max(retention.values()) if retention else None,
                "retention_before": max(summary["before"]["retention"].values(), default=None),
                "seconds": summary["seconds"],
            }
        )
        print(_row(rows[-1]), flush=True)
    basic = rows[0]
    if basic["retention"] is None:
        print("no key probes: retention was not measured (needs RUN/key and the schemes)")
        return
    checks = {
        "ft-basic 20%: retention <= 20%": basic["retention"] <= 0.20,
        "ft-basic 20%: test acc >= watermarked - 3 points": basic["test_acc"]
        >= basic["before"] - 0.03,
        "low-LR ftal keeps retention far higher": rows[1]["retention"] >= basic["retention"] + 0.5,
    }
    for text, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {text}")


def _row(row: dict[str, Any]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:6.2f}%"

    return (
        f"{row['attack']:28} labelled {row['labelled']:4.0%}  test acc {pct(row['before'])} -> "
        f"{pct(row['test_acc'])}  retention {pct(row['retention_before'])} -> "
        f"{pct(row['retention'])}  ({row['seconds']:.0f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    bench = sub.add_parser("throughput", help="ft-basic engine vs bare loop (default)")
    for p in (parser, bench):
        p.add_argument("--steps", type=int, default=300)
        p.add_argument("--repeats", type=int, default=5)
        p.add_argument("--model", default="lenet5")
        p.add_argument("--dataset", default="synthetic")
        p.add_argument("--device", default="auto")
    tab = sub.add_parser("table", help="the must-hold figures on a watermarked run")
    tab.add_argument("--run", required=True)
    tab.add_argument("--unlabeled", default="synthetic")
    tab.add_argument("--unlabeled-count", type=int, default=0)
    tab.add_argument("--epochs", type=int, default=10)
    tab.add_argument("--device", default="auto")
    args = parser.parse_args()
    if args.command == "table":
        table(args)
    else:
        throughput(args)


if __name__ == "__main__":
    main()
