"""The GPU check: three CUDA claims measured side by side in one run, no downloads.

    .venv/bin/python benchmarks/gpu.py [--device auto|cpu|cuda] [--quick]
        [--only scan,train,bf16] [--json [PATH]] [--threads N (a CPU run; default 1)]

``scan``   the batched 10-class trigger scan against a scan of one class with the same
           settings (steps, images per class, restarts), for both detectors (``gan``,
           ``neural-cleanse``), through ``benchmarks/gan_scan.py``'s ``ratio`` code:
           time(10 classes) / time(1 class), must hold <= 3 on CUDA.
``train``  resnet18 (CIFAR stem) on device-resident 32x32x3 uint8 tensors: the engine's TrainLoop
           vs an airbench-style bare loop, same initialisation, data, batch, SGD settings (no
           Nesterov: the engine has none), flips, precision and steps; warm-up excluded, CUDA
           synchronised, arms alternating in pairs. Engine / bare images/s, target >= 0.8.
``bf16``   the engine's AMP (``TrainLoop(amp=True)``) against fp32 from the same seed on the same
           ``synthetic`` batches: final test accuracies, their difference (target <= 1 point)
           and the largest gap between the loss curves (for information).

Data is generated in memory (random uint8 tensors; the seeded ``synthetic`` renderer, cached
in the data dir), so it runs offline on any CUDA machine; the full sizes are meant to finish
within 8 minutes (an estimate: not yet timed on a GPU). On a CPU
(``--device cpu``, the default without CUDA) or with ``--quick`` it runs tiny sizes and few
steps so it can be checked not to rot; those figures are not the GPU targets, and their target
column reads "n/a". ``--json`` prints one JSON object per row on stdout (the table then goes to
stderr); ``--json PATH`` writes them to PATH, with the run's settings. Exit code 1 when a
judged target fails. Never a CI test of speed.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import gan_scan  # noqa: E402  (benchmarks/gan_scan.py: the scan ratio's set-up and timing)

from engine.data import load_dataset  # noqa: E402
from engine.events import Event, Metrics  # noqa: E402
from engine.models import Architecture, build_model  # noqa: E402
from engine.session import JobContext  # noqa: E402
from engine.training import OptimSettings, Source, TrainLoop, clean_test_probe  # noqa: E402

SECTIONS = ("scan", "train", "bf16")
SCAN_TARGET = 3.0  # time(10 classes batched) / time(1 class), at most
TRAIN_TARGET = 0.8  # engine / bare images per second, at least
BF16_TARGET = 1.0  # |test accuracy fp32 - bf16| in points, at most


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How much each section does: FULL on a GPU, QUICK on a CPU or with ``--quick``."""

    # scan (gan_scan.ratio_setup / scan_times)
    scan_train: int  # synthetic training images (the attacker gets 10%)
    scan_train_steps: int  # steps training the scanned lenet5 (cached by gan_scan)
    scan_steps: int
    scan_warmup: int
    scan_repeats: int  # fastest of
    scan_params: dict[str, Any]  # detector parameters beyond the defaults
    # train (resnet18 32x32x3, engine vs bare)
    train_images: int
    train_batch: int
    train_steps: int
    train_warmup: int
    train_pairs: int
    # bf16 (engine fp32 vs engine bf16 autocast)
    bf16_model: str
    bf16_train: int
    bf16_test: int
    bf16_batch: int
    bf16_steps: int


FULL = Sizes(
    scan_train=6000,
    scan_train_steps=600,
    scan_steps=300,
    scan_warmup=5,
    scan_repeats=3,
    scan_params={},
    train_images=50_000,
    train_batch=512,
    train_steps=200,
    train_warmup=20,
    train_pairs=5,
    bf16_model="lenet5",
    bf16_train=20_000,
    bf16_test=5_000,
    bf16_batch=128,
    bf16_steps=600,
)
QUICK = Sizes(
    scan_train=1000,
    scan_train_steps=30,
    scan_steps=3,
    scan_warmup=1,
    scan_repeats=1,
    scan_params={"batch": 8, "images": 80, "val_images": 20},
    train_images=64,
    train_batch=8,
    train_steps=3,
    train_warmup=1,
    train_pairs=1,
    bf16_model="lenet5",
    bf16_train=1000,
    bf16_test=200,
    bf16_batch=32,
    bf16_steps=40,
)


@dataclasses.dataclass
class Row:
    section: str
    name: str
    value: float
    unit: str = ""
    target: str = ""  # "<= 3", ">= 0.8"...; empty: a figure for information
    verdict: str = ""  # PASS, FAIL, "n/a (cpu)", "n/a (quick)"; empty with no target
    note: str = ""


class Judge:
    """Turns measured values into rows, judging the targets only where they are claims."""

    def __init__(self, device: torch.device, quick: bool) -> None:
        self.skip = "n/a (cpu)" if device.type != "cuda" else "n/a (quick)" if quick else ""
        self.rows: list[Row] = []

    def info(self, section: str, name: str, value: float, unit: str = "", note: str = "") -> None:
        self.rows.append(Row(section, name, value, unit, note=note))

    def check(
        self, section: str, name: str, value: float, op: str, bound: float, unit: str = ""
    ) -> None:
        ok = value <= bound if op == "<=" else value >= bound
        verdict = self.skip or ("PASS" if ok and math.isfinite(value) else "FAIL")
        self.rows.append(Row(section, name, value, unit, f"{op} {bound:g}", verdict))

    @property
    def failed(self) -> bool:
        return any(r.verdict == "FAIL" for r in self.rows)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()``, queued device work included."""
    gc.collect()
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def say(message: str) -> None:
    print(f"# {message}", file=sys.stderr, flush=True)


# -- 1. scan: 10 classes batched vs 1 class, both detectors ------------------------------------


def section_scan(judge: Judge, device: torch.device, sizes: Sizes) -> None:
    model, full = gan_scan.ratio_setup(
        "synthetic", sizes.scan_train, sizes.scan_train_steps, device
    )
    say(f"scan: lenet5 watermarked (target 7), {len(full.labeled_x)} attacker images")
    for method, times in gan_scan.scan_times(
        model,
        full,
        steps=sizes.scan_steps,
        warmup_steps=sizes.scan_warmup,
        repeats=sizes.scan_repeats,
        **sizes.scan_params,
    ):
        ratio = times["batched"] / times["single"]
        judge.info("scan", f"{method}: 1 class", times["single"], "s")
        judge.info("scan", f"{method}: 10 classes batched", times["batched"], "s")
        judge.check("scan", f"{method}: ratio 10 classes / 1", ratio, "<=", SCAN_TARGET, "x")
        say(f"scan {method}: {times['single']:.3f}s vs {times['batched']:.3f}s")


# -- 2. train: engine TrainLoop vs a bare loop, resnet18 32x32x3 ------------------------------


def flip(x: torch.Tensor) -> torch.Tensor:
    """Per-image random horizontal flip, on the device (both arms)."""
    mask = torch.rand(len(x), 1, 1, 1, device=x.device) < 0.5
    return torch.where(mask, x.flip(3), x)


SETTINGS = OptimSettings(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4)


def engine_arm(model, x, y, batch, warmup, steps, amp) -> float:
    """TrainLoop's images/s over ``steps`` after a ``warmup``-step loop (whose optimizer state
    the timed loop continues from, as the bare arm's optimizer does)."""
    source = Source("owner", x, batch, y=y, transform=flip)

    def loop(n: int, state: dict[str, Any] | None = None) -> TrainLoop:
        return TrainLoop(
            model,
            [source],
            SETTINGS,
            ctx=JobContext(),
            phase="bench",
            total_steps=n,
            probes=[],
            eval_every=10**9,
            amp=amp,
            optimizer_state=state,
        )

    warm = loop(warmup)
    warm.run()
    run = loop(steps, warm.optimizer.state_dict()).run  # built outside the timing
    return steps * batch / timed(run, x.device)


def bare_arm(model, x, y, batch, warmup, steps, amp) -> float:
    """An airbench-style loop: data already on the device, no DataLoader, no host read
    until the end; the same optimizer settings and precision as the engine's."""
    device = x.device
    if amp:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=SETTINGS.lr,
        momentum=SETTINGS.momentum,
        weight_decay=SETTINGS.weight_decay,
    )
    perm = torch.randperm(len(x), device=device)
    per_pass = max(1, len(x) // batch)
    model.train()

    def run(n: int) -> torch.Tensor:
        loss = torch.zeros((), device=device)
        for step in range(n):
            j = step % per_pass
            idx = perm[j * batch : (j + 1) * batch]
            xb = x[idx].float().div_(255.0)
            if amp:
                xb = xb.contiguous(memory_format=torch.channels_last)
            xb = flip(xb)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return loss

    run(warmup).item()
    return steps * batch / timed(lambda: run(steps).item(), device)


def section_train(judge: Judge, device: torch.device, sizes: Sizes, seed: int) -> None:
    amp = device.type == "cuda"  # what TrainLoop does by default
    gen = torch.Generator(device=device).manual_seed(seed)
    n = sizes.train_images
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, device=device, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=gen, device=device)
    torch.manual_seed(seed)
    template = build_model(Architecture("resnet18", (3, 32, 32), 10)).to(device)
    arms = {"engine": engine_arm, "bare": bare_arm}
    speeds: dict[str, list[float]] = {"engine": [], "bare": []}
    ratios = []
    for pair in range(sizes.train_pairs):
        order = ("engine", "bare") if pair % 2 == 0 else ("bare", "engine")
        got = {}
        for name in order:
            got[name] = arms[name](
                copy.deepcopy(template),
                x,
                y,
                sizes.train_batch,
                sizes.train_warmup,
                sizes.train_steps,
                amp,
            )
            speeds[name].append(got[name])
        ratios.append(got["engine"] / got["bare"])
        say(f"train pair {pair + 1}: engine {got['engine']:,.0f}/s bare {got['bare']:,.0f}/s")
    how = f"batch {sizes.train_batch}, {sizes.train_steps} steps, {'bf16' if amp else 'fp32'}"
    judge.info("train", "engine TrainLoop", statistics.median(speeds["engine"]), "img/s", how)
    judge.info("train", "bare loop", statistics.median(speeds["bare"]), "img/s", how)
    judge.check(
        "train",
        f"ratio engine / bare (median of {len(ratios)})",
        statistics.median(ratios),
        ">=",
        TRAIN_TARGET,
        "x",
    )


# -- 3. bf16: the engine's AMP vs fp32, same seed and batches --------------------------------


def train_once(data, sizes: Sizes, seed: int, amp: bool) -> tuple[float, dict[int, float]]:
    """(final test accuracy, {step: the loop's mean loss}) of one run of TrainLoop."""
    curve: dict[int, float] = {}

    def collect(event: Event) -> None:
        if isinstance(event, Metrics):
            curve[event.step] = event.loss

    torch.manual_seed(seed)
    model = build_model(Architecture(sizes.bf16_model, data.shape, data.num_classes))
    result = TrainLoop(
        model.to(data.device),
        [Source("owner", data.train_x, sizes.bf16_batch, y=data.train_y)],
        OptimSettings(optimizer="sgd", lr=0.05, momentum=0.9, schedule="cosine"),
        ctx=JobContext(collect),
        phase="bf16" if amp else "fp32",
        total_steps=sizes.bf16_steps,
        probes=[clean_test_probe(data)],
        eval_every=10**9,  # the last step evaluates
        seed=seed,
        amp=amp,
    ).run()
    assert result.test_acc is not None
    return result.test_acc, curve


def section_bf16(judge: Judge, device: torch.device, sizes: Sizes, seed: int) -> None:
    data = load_dataset(
        "synthetic", device=device, train_size=sizes.bf16_train, test_size=sizes.bf16_test
    ).data
    fp32_acc, fp32_curve = train_once(data, sizes, seed, amp=False)
    bf16_acc, bf16_curve = train_once(data, sizes, seed, amp=True)
    steps = sorted(fp32_curve.keys() & bf16_curve.keys())
    gaps = [abs(fp32_curve[s] - bf16_curve[s]) for s in steps]
    how = (
        f"{sizes.bf16_model}, synthetic {sizes.bf16_train}/{sizes.bf16_test}, "
        f"batch {sizes.bf16_batch}, {sizes.bf16_steps} steps"
    )
    judge.info("bf16", "fp32 test accuracy (amp=False)", 100 * fp32_acc, "%", how)
    judge.info("bf16", "bf16 test accuracy (amp=True)", 100 * bf16_acc, "%", "engine's own AMP")
    judge.check(
        "bf16", "|accuracy difference|", 100 * abs(fp32_acc - bf16_acc), "<=", BF16_TARGET, "pt"
    )
    worst = steps[gaps.index(max(gaps))] if gaps else 0
    judge.info(
        "bf16",
        "loss curves max |difference|",
        max(gaps, default=float("nan")),
        note=f"{len(steps)} points, largest at step {worst}",
    )
    judge.info("bf16", "final loss fp32 - bf16", fp32_curve[steps[-1]] - bf16_curve[steps[-1]])


# -- output ----------------------------------------------------------------------------------


def fmt_value(row: Row) -> str:
    if not math.isfinite(row.value):
        return str(row.value)
    if row.unit == "img/s":
        return f"{row.value:,.0f} {row.unit}"
    if not row.unit:  # losses: small differences must still show
        return f"{row.value:.4g}"
    return f"{row.value:.{3 if row.unit == 's' else 2}f} {row.unit}"


def print_table(rows: list[Row], out: TextIO) -> None:
    cells = [("section", "measurement", "value", "target", "verdict", "note")]
    cells += [(r.section, r.name, fmt_value(r), r.target, r.verdict, r.note) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    for i, line in enumerate(cells):
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out)
        if i == 0:
            print("  ".join("-" * w for w in widths), file=out)


def resolve(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (torch.cuda.is_available() is False)")
    return torch.device(name)


def parse_only(value: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in value.split(",") if v.strip())
    bad = [n for n in names if n not in SECTIONS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"choose from {','.join(SECTIONS)} (got {value!r})")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--quick", action="store_true", help="tiny sizes (always so on a CPU)")
    parser.add_argument("--only", type=parse_only, default=SECTIONS, help="scan,train,bf16")
    parser.add_argument(
        "--json",
        nargs="?",
        const="-",
        metavar="PATH",
        help="rows as JSON: one object per line on stdout (table to stderr), or into PATH",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads on a CPU run (default 1)"
    )
    args = parser.parse_args(argv)
    device = resolve(args.device)
    if device.type == "cpu":  # OpenMP's spinning threads crawl when another process holds a core
        torch.set_num_threads(max(1, args.threads))
    quick = args.quick or device.type != "cuda"
    sizes = QUICK if quick else FULL
    table_out = sys.stderr if args.json == "-" else sys.stdout

    if device.type == "cuda":
        where = f"cuda ({torch.cuda.get_device_name(device)})"
    else:
        threads = torch.get_num_threads()
        where = f"cpu ({threads} thread{'s' if threads != 1 else ''})"
    print(
        f"GPU check on {where}, torch {torch.__version__}, "
        f"{'tiny sizes (--quick)' if quick else 'full sizes'}, sections {','.join(args.only)}",
        file=table_out,
    )
    if device.type != "cuda":
        print(
            "CPU run: a smoke test at tiny sizes. These figures are NOT the GPU targets; "
            "the targets are CUDA claims and read n/a here.",
            file=table_out,
        )
    elif quick:
        print("--quick: tiny sizes; figures are not the targets (n/a).", file=table_out)

    judge = Judge(device, quick)
    started = time.perf_counter()
    took: dict[str, float] = {}
    for name in SECTIONS:
        if name not in args.only:
            continue
        t0 = time.perf_counter()
        if name == "scan":
            section_scan(judge, device, sizes)
        elif name == "train":
            section_train(judge, device, sizes, args.seed)
        else:
            section_bf16(judge, device, sizes, args.seed)
        took[name] = round(time.perf_counter() - t0, 2)
        say(f"{name} took {took[name]:.1f}s")
    total = time.perf_counter() - started

    print("", file=table_out)
    print_table(judge.rows, table_out)
    spent = ", ".join(f"{k} {v:.1f}s" for k, v in took.items())
    print(f"\ntotal {total:.1f}s ({spent})", file=table_out)
    if device.type != "cuda":
        print("(cpu: figures above are not the GPU targets)", file=table_out)

    if args.json:
        rows = [dataclasses.asdict(r) for r in judge.rows]
        if args.json == "-":
            for row in rows:
                print(json.dumps(row), flush=True)
        else:
            doc = {
                "device": where,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "quick": quick,
                "sizes": dataclasses.asdict(sizes),
                "seconds": {**took, "total": round(total, 2)},
                "rows": rows,
            }
            Path(args.json).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 1 if judge.failed else 0


if __name__ == "__main__":
    sys.exit(main())
