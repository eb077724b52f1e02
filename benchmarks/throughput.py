"""Engine training loop vs a bare PyTorch loop: the paired ratio of their speeds, until stable.

Same model (fresh copies of one initialisation), same uint8 data sliced on the device, same
batch size, optimizer and number of steps in both arms. Evaluation is off in both (the
engine's eval interval is longer than the run) so the ratio is the cost of the loop itself:
mixed-batch assembly, schedule, command polling and loss bookkeeping.

Why paired and sequential: six runs of the old version (medians of 5 separate repeats) read
0.83 to 1.07 on one quiet machine, so it could not tell a regression from noise. Now an
engine run and a bare run make a pair, back to back, and the pair's ratio (engine images/s
over bare images/s) is the measurement: drift in machine load hits both halves of a pair. The
order alternates (engine first, then bare first, ...) so neither arm always gets the warmer
caches. The first ``--warmup`` pairs are dropped. Pairs are added until the median of the
ratios moved less than ``--tolerance`` over the last ``--window`` pairs and the 95% interval
for the median is at most ``--precision`` wide (at least ``--min-pairs``, at most
``--max-pairs``): a median can sit still by chance while the ratios scatter by +-30%, as
they do on a loaded machine, and stopping there would report noise as a figure. Reported:
the median ratio, its spread (min, max, interquartile range), a distribution-free interval
for the median (order statistics, the sign test's: no normality assumed), the verdict
against the 0.95 target, and, as a cross-check, the ratio of the fastest run of each arm
(interference only ever adds time, so the minimum is the least disturbed run).

``--control`` runs the bare loop in both arms (an A/A test): what it reads is the machine's
noise floor, the distance from 1.000 that no engine change could cause. Run it when a
figure near the target looks suspicious.

Time is CPU time of the process by default (``--clock cpu``): on a shared machine wall time
also counts the slices the scheduler gave to other people's work, which is noise here. Both
clocks are always measured and both ratios printed; if they disagree a lot, the engine is
waiting on something (a lock, I/O), which only wall time shows. One torch thread by default,
so CPU time is one core's work and two arms never compete for cores:

    OMP_NUM_THREADS=1 python benchmarks/throughput.py [--steps 150] [--min-pairs 8]
        [--max-pairs 40] [--window 5] [--tolerance 0.01] [--precision 0.06]
        [--clock cpu|wall] [--control] [--device cpu]
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import time

import torch
import torch.nn.functional as F

from engine.data import as_float, load_dataset
from engine.jobs import resolve_device
from engine.models import Architecture, build_model
from engine.session import JobContext
from engine.training import OptimSettings, Source, TrainLoop

TARGET = 0.95
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> dict[str, float]:
    """Seconds ``fn()`` took on every clock, with queued device work included."""
    gc.collect()  # the previous run's garbage is not this run's cost
    sync(device)
    start = {name: clock() for name, clock in CLOCKS.items()}
    fn()
    sync(device)
    return {name: clock() - start[name] for name, clock in CLOCKS.items()}


def bare_loop(model, x_all, y_all, batch, steps, lr):
    """A plain loop: index, convert, forward, backward, step. Set-up is outside the timing."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    perm = torch.randperm(len(x_all), device=x_all.device)
    per_pass = len(x_all) // batch

    def run() -> None:
        for step in range(steps):
            idx = perm[(step % per_pass) * batch : (step % per_pass + 1) * batch]
            x, y = as_float(x_all[idx]), y_all[idx]
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        loss.item()

    return run


def engine_loop(model, x_all, y_all, batch, steps, lr):
    """The engine's TrainLoop on the same data; built (optimizer included) outside the timing."""
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
    return loop.run


def median_interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(low, high, coverage): order statistics j and n-j+1 around the median, j as large as
    keeps the coverage at ``level`` or above (sign-test interval). Below 6 values no interval
    reaches 95%: min and max, with their lower coverage."""
    s, n = sorted(values), len(values)
    tail, j = 0.0, 0
    while j < n // 2 and tail + math.comb(n, j) / 2**n <= (1 - level) / 2:
        tail += math.comb(n, j) / 2**n
        j += 1
    j = max(j, 1)
    coverage = 1 - 2 * sum(math.comb(n, i) for i in range(j)) / 2**n
    return s[j - 1], s[n - j], coverage


def quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def settled(history: list[float], ratios: list[float], args: argparse.Namespace) -> bool:
    """The median after each of the last ``--window`` pairs stayed within ``--tolerance``,
    and the interval for the median is at most ``--precision`` wide."""
    recent = history[-args.window :]
    low, high, _ = median_interval(ratios)
    still = len(recent) == args.window and max(recent) - min(recent) < args.tolerance
    return still and high - low <= args.precision


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="steps per run")
    parser.add_argument("--min-pairs", type=int, default=8)
    parser.add_argument("--max-pairs", type=int, default=40)
    parser.add_argument("--window", type=int, default=5, help="pairs the median must hold for")
    parser.add_argument("--tolerance", type=float, default=0.01, help="how still it must be")
    parser.add_argument("--precision", type=float, default=0.06, help="widest interval to stop")
    parser.add_argument("--warmup", type=int, default=1, help="pairs run first and dropped")
    parser.add_argument("--clock", choices=tuple(CLOCKS), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--control", action="store_true", help="bare vs bare: the noise floor")
    args = parser.parse_args()
    if not 1 <= args.window <= args.min_pairs <= args.max_pairs:
        parser.error("need 1 <= --window <= --min-pairs <= --max-pairs")

    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_dataset(args.dataset, device=device, train_size=20_000, test_size=100).data
    torch.manual_seed(0)
    template = build_model(Architecture(args.model, data.shape, data.num_classes)).to(device)
    arms = {"engine": bare_loop if args.control else engine_loop, "bare": bare_loop}
    print(
        f"device {device}, {args.model}, {data.name} {tuple(data.shape)}, batch {args.batch}, "
        f"{args.steps} steps a run, torch threads {torch.get_num_threads()} "
        f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), clock {args.clock}"
    )
    if args.control:
        print("CONTROL (--control): the bare loop in both arms; 'engine' below is bare too")
    print(f"load average at the start: {load_average()}")

    ratios: dict[str, list[float]] = {name: [] for name in CLOCKS}
    speeds: dict[str, list[float]] = {"engine": [], "bare": []}  # on the chosen clock
    history: list[float] = []
    images = args.steps * args.batch
    for pair in range(args.warmup + args.max_pairs):
        order = ("engine", "bare") if pair % 2 == 0 else ("bare", "engine")
        seconds = {}
        for name in order:
            run = arms[name](
                copy.deepcopy(template), data.train_x, data.train_y, args.batch, args.steps, 0.05
            )
            seconds[name] = timed(run, device)
        if pair < args.warmup:
            continue
        for clock in CLOCKS:  # engine images/s over bare images/s: same images in both
            ratios[clock].append(seconds["bare"][clock] / seconds["engine"][clock])
        for name in speeds:
            speeds[name].append(images / seconds[name][args.clock])
        history.append(statistics.median(ratios[args.clock]))
        if len(history) >= args.min_pairs and settled(history, ratios[args.clock], args):
            break

    chosen = ratios[args.clock]
    n, median = len(chosen), history[-1]
    low, high, coverage = median_interval(chosen)
    q1, q3 = quartiles(chosen)
    why = "settled" if settled(history, chosen, args) else "--max-pairs reached, not settled"
    print(f"load average at the end: {load_average()}")
    print(f"\n{n} pairs after {args.warmup} warm-up ({why}), order alternating each pair")
    for name in speeds:
        print(f"  {name + ' loop:':14}{statistics.median(speeds[name]):10,.0f} images/s (median)")
    print(f"  paired ratios ({args.clock}): {', '.join(f'{r:.3f}' for r in chosen)}")
    moves = ", ".join(f"{m:.3f}" for m in history[-args.window :])
    print(f"  median after each of the last {min(args.window, n)} pairs: {moves}")
    other = next(c for c in CLOCKS if c != args.clock)
    print(f"  the same pairs on the {other} clock: median {statistics.median(ratios[other]):.3f}")
    fastest = max(speeds["engine"]) / max(speeds["bare"])
    print(f"  fastest engine run / fastest bare run ({args.clock}): {fastest:.3f}")
    print(
        f"\nratio engine/bare ({args.clock} time): median {median:.3f}  "
        f"min {min(chosen):.3f} max {max(chosen):.3f}  IQR {q1:.3f}-{q3:.3f}  "
        f"{100 * coverage:.0f}% interval for the median {low:.3f}-{high:.3f}"
    )
    verdict = "pass" if median >= TARGET else "FAIL"
    if low < TARGET <= high:
        verdict += f" (but {TARGET} is inside the interval: not told apart from the target)"
    print(f"target >= {TARGET}: {verdict}")


if __name__ == "__main__":
    main()
