"""Engine training loop vs a bare PyTorch loop: images/s side by side, in one process.

Same model (fresh copies of one initialisation), same uint8 data sliced on the device, same
batch size and optimizer. Runs alternate (engine, bare, engine, bare, ...) so drift in machine
load hits both; the median of the repeats is reported. Evaluation is off in both (the engine's
eval interval is longer than the run) so the ratio is the cost of the loop itself: mixed-batch
assembly, schedule, command polling and loss bookkeeping.

    python benchmarks/throughput.py [--steps 150] [--repeats 5] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from engine.data import as_float, load_dataset
from engine.jobs import resolve_device
from engine.models import Architecture, build_model
from engine.session import JobContext
from engine.training import OptimSettings, Source, TrainLoop


def bare_loop(model, x_all, y_all, batch, steps, lr) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    perm = torch.randperm(len(x_all), device=x_all.device)
    per_pass = len(x_all) // batch
    start = time.perf_counter()
    for step in range(steps):
        idx = perm[(step % per_pass) * batch : (step % per_pass + 1) * batch]
        x, y = as_float(x_all[idx]), y_all[idx]
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    loss.item()
    return steps * batch / (time.perf_counter() - start)


def engine_loop(model, x_all, y_all, batch, steps, lr) -> float:
    loop = TrainLoop(
        model,
        [Source("owner", x_all, batch, y=y_all)],
        OptimSettings(lr=lr, schedule="cosine"),
        ctx=JobContext(),
        phase="bench",
        total_steps=steps,
        probes=[],
        eval_every=10**9,
    )
    start = time.perf_counter()
    loop.run()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    device = resolve_device(args.device)
    data = load_dataset(args.dataset, device=device, train_size=20_000, test_size=100).data
    torch.manual_seed(0)
    template = build_model(Architecture(args.model, data.shape, data.num_classes)).to(device)
    runs = {"engine": [], "bare": []}
    for repeat in range(args.repeats + 1):  # the first round warms caches and is dropped
        for name, fn in (("engine", engine_loop), ("bare", bare_loop)):
            speed = fn(
                copy.deepcopy(template), data.train_x, data.train_y, args.batch, args.steps, 0.05
            )
            if repeat:
                runs[name].append(speed)
    engine, bare = statistics.median(runs["engine"]), statistics.median(runs["bare"])
    print(
        f"device {device}, {args.model}, {data.name} {tuple(data.shape)}, batch {args.batch}, "
        f"{args.steps} steps x {args.repeats} repeats, torch threads {torch.get_num_threads()}"
    )
    for name, value in (("engine", engine), ("bare", bare)):
        each = ", ".join(f"{v:,.0f}" for v in runs[name])
        print(f"{name + ' loop:':13}{value:10,.0f} images/s  (runs: {each})")
    print(f"ratio engine/bare: {engine / bare:.3f}  (target >= 0.95)")


if __name__ == "__main__":
    main()
