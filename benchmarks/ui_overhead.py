"""What the playground's UI costs: training speed with the app attached, key latency, startup.

Three figures, measured in one run, each next to its target:

(a) training images/s with ``WmtuiApp`` attached, divided by images/s of the same training
    session drained by a plain loop (no UI). The app runs headless (``App.run_test``) at the
    default 2 Hz repaint, and every frame is also turned into terminal escape sequences, the
    work a real terminal driver adds. The two kinds of run alternate, and the medians are
    compared. Images/s come from the session's own Metrics events (training time per log
    interval, the first interval left out as warm-up), not from wall time with startup.
(b) key-press-to-screen latency, p50/p95, while the worker trains in the same process (see
    ``key_latency`` for exactly what is timed); the worker's acknowledgement is timed too,
    without a target: the repaint timer paces it.
(c) seconds from spawning the real ``wmtui tui --dataset auto`` (the playground on the offline
    default, straight to training) in a 100x30 tmux pane to the first plotted point (braille
    dots in ``tmux capture-pane``), with the milestones on the way and the import times of
    what the CLI loads; and, for reference, bare ``wmtui``'s first frame (its start screen,
    which waits for a choice, so it has no first point of its own).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ui_overhead.py [--repeats 3] [--presses 40]
        [--epochs 6] [--starts 3] [--dataset auto]

``--dataset NAME`` picks the dataset of (c); (a) and (b) always train lenet5 on ``synthetic``.
Run directories go to a temporary folder that is removed at the end; datasets come from the
usual data directory ($WMTUI_DATA_DIR or the platform cache), and the synthetic set used
here is rendered there once, before anything is timed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import os
import random
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from rich.cells import cell_len
from textual import events
from textual._compositor import ChopsUpdate, LayoutUpdate  # the updates a driver is handed
from textual.geometry import Region
from textual.widgets import Log

from engine.config import TrainConfig
from engine.data import load_dataset
from engine.jobs import new_run_manifest
from engine.runs import RunDir
from wmtui.tui.app import WmtuiApp
from wmtui.tui.sessions import training_session

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ui_startup import SIZE, import_times, startup

TARGETS = {"ratio": 0.90, "p95_ms": 100.0, "first_point_s": 3.0}


# -- what the app puts on the screen ----------------------------------------------------------
class FrameTap:
    """Sees every frame the app hands to its driver, as soon as it is handed over.

    The headless driver drops frames; the tap turns each one into escape sequences anyway (the
    cost of a real terminal driver, so (a) compares like with like) and, with ``mirror``, keeps
    a character grid of the screen built from the frames alone, so (b) can check what a
    terminal would show rather than what a widget holds. ``watch`` is a test run after every
    frame; the first frame that makes it true stamps ``seen_at``.
    """

    def __init__(self, app: WmtuiApp, mirror: bool = False) -> None:
        self.app = app
        self.mirror = mirror
        self.frames = 0
        self.sent = 0  # characters of escape sequences a terminal would have received
        self.grid: list[list[str]] = []
        self.watch: Callable[[], bool] | None = None
        self.seen_at: float | None = None
        display = app._display

        def tapped(screen: object, renderable: object) -> None:
            display(screen, renderable)
            if not isinstance(renderable, LayoutUpdate | ChopsUpdate):
                return
            self.frames += 1
            self.sent += len(renderable.render_segments(app.console))
            if self.mirror:
                self._apply(renderable)
            if self.watch is not None and self.watch():
                self.seen_at, self.watch = time.perf_counter(), None

        app._display = tapped  # type: ignore[method-assign]

    def _apply(self, update: LayoutUpdate | ChopsUpdate) -> None:
        width, height = self.app.size
        if len(self.grid) != height or len(self.grid[0]) != width:
            self.grid = [[" "] * width for _ in range(height)]
        if isinstance(update, LayoutUpdate):
            for y, line in enumerate(update.strips, update.region.y):
                self._put(update.region.x, y, "".join(strip.text for strip in line))
            return
        for y, x1, x2 in update.spans:  # the same cuts as ChopsUpdate.render_segments
            for end, (x, strip) in zip(update.chop_ends[y], update.chops[y].items(), strict=False):
                if strip is None or x > x2 or end <= x1:
                    continue
                if not (x2 > x >= x1 and end <= x2):
                    strip = strip.crop(0, min(end, x2) - x)
                self._put(x, y, strip.text)

    def _put(self, x: int, y: int, text: str) -> None:
        if not 0 <= y < len(self.grid):
            return
        row = self.grid[y]
        for char in text:
            cells = cell_len(char)
            if cells == 0:
                continue
            if x >= len(row):
                break
            row[x] = char
            if cells == 2 and x + 1 < len(row):
                row[x + 1] = ""
            x += cells

    def rows(self, region: Region) -> list[str]:
        """The screen's text inside ``region`` (absolute coordinates), one string per row."""
        return [
            "".join(self.grid[y][region.x : region.right]).rstrip()
            for y in range(region.y, min(region.bottom, len(self.grid)))
        ]


def training_speed(run: RunDir) -> float:
    """Images/s over a run from its Metrics events (each covers the steps since the one before,
    timing training only); the first interval, with its warm-up, is left out."""
    metrics = [e for e in run.events() if e.get("event") == "metrics"]
    batch = run.manifest()["config"]["batch_size"]
    images, seconds = 0, 0.0
    for before, event in itertools.pairwise(metrics):
        done = (event["step"] - before["step"]) * batch
        images += done
        seconds += done / event["images_per_s"]
    return images / seconds


def new_run(folder: Path, config: TrainConfig) -> RunDir:
    return RunDir.create(folder, new_run_manifest(config, "bench"))


# -- (a) throughput -------------------------------------------------------------------------
def headless_speed(config: TrainConfig, folder: Path) -> float:
    run = new_run(folder, config)
    session = training_session(config, run).start()
    for _ in session.events():  # the plain loop: drain until Done
        pass
    session.join(5.0)
    if session.status != "completed":
        raise SystemExit(f"headless run {session.status}: {session.error}")
    return training_speed(run)


async def attached_speed(
    config: TrainConfig, folder: Path, refresh: float
) -> tuple[float, str, float]:
    """Images/s with the app attached, the frames drawn, and the share of one core that the UI
    thread (this one: the app's event loop) used while the worker trained."""
    run = new_run(folder, config)
    app = WmtuiApp(lambda: training_session(config, run), refresh=refresh, run_path=run.path)
    tap = FrameTap(app)
    training: list[tuple[float, float]] = []  # (wall, UI thread CPU) at the first reading, end
    async with app.run_test(size=SIZE):
        while app.state.status not in {"completed", "failed", "stopped"}:
            if not training and app.state.step > 0:
                training.append((time.perf_counter(), time.thread_time()))
            await asyncio.sleep(0.05)
        training.append((time.perf_counter(), time.thread_time()))
    if app.state.status != "completed" or len(training) != 2:
        raise SystemExit(f"run with the app attached {app.state.status}: {app.state.error}")
    (wall0, cpu0), (wall1, cpu1) = training
    drawn = f"{tap.frames} ({tap.sent / 1024:.0f} KiB)"
    return training_speed(run), drawn, (cpu1 - cpu0) / (wall1 - wall0)


# -- (b) latency ----------------------------------------------------------------------------
async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.001)


async def key_latency(
    config: TrainConfig, folder: Path, presses: int, refresh: float
) -> tuple[list[float], list[float]]:
    """Milliseconds from a key press to the screen showing its echo, and to the worker's ack.

    What is timed, per press, while the worker trains in this process:

    * start: the key event is handed to the app exactly as a terminal driver hands it over
      (``driver.send_message``, the first thing ``Pilot.press`` does). Awaiting ``Pilot.press``
      itself is no use here: it then waits for the process to go idle, which a process with a
      busy training thread never does, so each press would take two seconds.
    * echo: the first frame handed to the driver after which the screen, rebuilt from frames
      only (``FrameTap``), shows the new log line ``> learning rate ×2`` (or ÷2) directly
      below the line that preceded it in the log. That line is unique (the previous press's
      acknowledgement, which names its step), so an older, identical echo can't be mistaken
      for the new one. The time includes the rendering to escape sequences of that frame.
    * ack: the same, for the worker's ``learning rate set to ... at step N`` line, which
      reaches the screen on the next repaint tick after the worker has applied the command.

    Keys alternate ``+`` and ``-`` (the learning rate stays put) and each waits a random
    fraction of a repaint period first, so presses fall at every phase of the repaint timer.
    """
    run = new_run(folder, config)
    app = WmtuiApp(lambda: training_session(config, run), refresh=refresh, run_path=run.path)
    tap = FrameTap(app, mirror=True)
    rng = random.Random(0)
    echo_ms: list[float] = []
    ack_ms: list[float] = []
    async with app.run_test(size=SIZE):
        await until(lambda: app.state.step > 0, 120.0, "the first training metrics")
        log = app.query_one("#log", Log)

        def find(start: int, test: Callable[[str], bool]) -> int | None:
            lines = log.lines
            return next((i for i in range(start, len(lines)) if test(lines[i])), None)

        def shown(index: int) -> bool:
            region = log.scrollable_content_region
            pair = [line[: region.width].rstrip() for line in log.lines[index - 1 : index + 1]]
            rows = tap.rows(region)
            return any(rows[i : i + 2] == pair for i in range(len(rows) - 1))

        for press in range(presses):
            await asyncio.sleep(rng.uniform(0.0, 1.0 / refresh))
            key, char, sign = ("plus", "+", "×") if press % 2 == 0 else ("minus", "-", "÷")
            echo, start = f"> learning rate {sign}2", log.line_count
            found: dict[str, int] = {}

            def echo_seen(echo: str = echo, start: int = start, found: dict = found) -> bool:
                found["echo"] = index = find(start, echo.__eq__)  # type: ignore[assignment]
                return index is not None and shown(index)

            tap.watch, tap.seen_at = echo_seen, None
            started = time.perf_counter()
            app._driver.send_message(events.Key(key, char))  # type: ignore[union-attr]
            await until(lambda: tap.seen_at is not None, 5.0, f"the echo of {key!r}")
            echo_ms.append(1000 * (tap.seen_at - started))  # type: ignore[operator]

            def ack_seen(found: dict = found) -> bool:
                index = find(found["echo"] + 1, lambda s: s.startswith("learning rate set to"))
                return index is not None and shown(index)

            tap.watch, tap.seen_at = ack_seen, None
            await until(lambda: tap.seen_at is not None, 10.0, f"the worker's ack of {key!r}")
            ack_ms.append(1000 * (tap.seen_at - started))  # type: ignore[operator]
        if app.session is not None:
            app.session.stop(timeout=2.0)
    return echo_ms, ack_ms


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q% of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# -- (c) startup ----------------------------------------------------------------------------
# -- the report -----------------------------------------------------------------------------
def load_average() -> str:
    """1, 5 and 15 minute load averages: other work on the machine skews every figure."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):  # not on every platform
        return "unknown"


def verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each kind in (a)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs of each run in (a)")
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--test-size", type=int, default=1_000)
    parser.add_argument("--presses", type=int, default=40, help="key presses in (b)")
    parser.add_argument("--starts", type=int, default=3, help="process starts in (c)")
    parser.add_argument("--dataset", default="auto", help="(c): `wmtui tui --dataset NAME`")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--refresh", type=float, default=2.0, help="repaints per second")
    args = parser.parse_args()

    config = TrainConfig(
        dataset="synthetic",
        model="lenet5",
        epochs=args.epochs,
        train_size=args.train_size,
        test_size=args.test_size,
        device=args.device,
    )
    load_dataset("synthetic", train_size=args.train_size, test_size=args.test_size)  # cache it
    steps = args.epochs * -(-args.train_size // config.batch_size)
    print(
        f"lenet5 on synthetic ({args.train_size} train / {args.test_size} test), batch "
        f"{config.batch_size}, {steps} steps a run, device {args.device}, torch threads "
        f"{torch.get_num_threads()} (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')})"
        f", {os.cpu_count()} CPUs, app at {SIZE[0]}x{SIZE[1]}, {args.refresh:g} Hz repaint"
    )
    print(f"load average at the start: {load_average()}")
    tmp = Path(tempfile.mkdtemp(prefix="wmtui-ui-bench-"))
    try:
        speeds: dict[str, list[float]] = {"attached": [], "headless": []}
        frames: list[str] = []
        ui_shares: list[float] = []
        warm = config.replace(epochs=1)  # a short round of each first, dropped: warm caches
        asyncio.run(attached_speed(warm, tmp / "warm-app", args.refresh))
        headless_speed(warm, tmp / "warm-plain")
        for repeat in range(args.repeats):
            speed, count, share = asyncio.run(
                attached_speed(config, tmp / f"app-{repeat}", args.refresh)
            )
            speeds["attached"].append(speed)
            frames.append(count)
            ui_shares.append(share)
            speeds["headless"].append(headless_speed(config, tmp / f"plain-{repeat}"))
        ratio = statistics.median(speeds["attached"]) / statistics.median(speeds["headless"])
        print("\n(a) training speed, runs alternating (app, plain, app, plain, ...)")
        for name, key in (("app attached", "attached"), ("plain loop", "headless")):
            each = ", ".join(f"{v:,.0f}" for v in speeds[key])
            value = statistics.median(speeds[key])
            print(f"  {name + ':':14}{value:9,.0f} images/s  (runs: {each})")
        shares = ", ".join(f"{100 * v:.0f}%" for v in ui_shares)
        print(f"  frames drawn per app run (escape sequences): {', '.join(frames)}")
        print(f"  UI thread CPU while training, share of one core: {shares}")

        echo_ms, ack_ms = asyncio.run(
            key_latency(config.replace(epochs=1000), tmp / "latency", args.presses, args.refresh)
        )
        p50, p95 = percentile(echo_ms, 50), percentile(echo_ms, 95)
        print(f"\n(b) {len(echo_ms)} key presses (+ and - alternating) while training")
        print(
            f"  key to echo on screen:  p50 {p50:6.1f} ms  p95 {p95:6.1f} ms  "
            f"max {max(echo_ms):6.1f} ms"
        )
        print(
            f"  key to worker's ack on screen:  p50 {percentile(ack_ms, 50):6.1f} ms  "
            f"p95 {percentile(ack_ms, 95):6.1f} ms  (paced by the {args.refresh:g} Hz repaint)"
        )

        first: float | None = None
        command = ["tui", "--dataset", args.dataset]
        if shutil.which("tmux") is None:
            print("\n(c) skipped: tmux is not installed")
        else:
            print(
                f"\n(c) `wmtui {shlex.join(command)}` in a {SIZE[0]}x{SIZE[1]} tmux pane, "
                f"{args.starts} starts"
            )
            starts = [startup(command, tmp / f"start-{i}") for i in range(args.starts)]
            first = statistics.median(marks["first plotted point"] for marks, _ in starts)
            for title, part in (("on the benchmark's clock", 0), ("on the worker's clock", 1)):
                print(f"  {title}:")
                for name in starts[0][part]:
                    values = [s[part][name] for s in starts if name in s[part]]
                    each = ", ".join(f"{v:.2f}" for v in values)
                    median = statistics.median(values)
                    print(f"    {name + ':':36}{median:6.2f} s  (starts: {each})")
            bare = [
                startup([], tmp / f"bare-{i}", until_point=False)[0]["first frame of the app"]
                for i in range(args.starts)
            ]
            each = ", ".join(f"{v:.2f}" for v in bare)
            print(
                f"  bare `wmtui` (its start screen), first frame: "
                f"{statistics.median(bare):.2f} s  (starts: {each})"
            )
            print("  imports in a fresh interpreter (CLI order):")
            for name, seconds in import_times().items():
                print(f"    {name + ':':36}{seconds:6.2f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"load average at the end: {load_average()}")
    print(f"\n{'figure':44}{'value':>10}  {'target':>9}  result")
    print(
        f"{'(a) images/s, app attached / plain loop':44}{ratio:10.3f}  "
        f"{'>= ' + format(TARGETS['ratio'], '.2f'):>9}  {verdict(ratio >= TARGETS['ratio'])}"
    )
    print(
        f"{'(b) key to screen p95 (p50 ' + format(p50, '.0f') + ' ms)':44}{p95:8.1f}ms  "
        f"{'<= 100ms':>9}  {verdict(p95 <= TARGETS['p95_ms'])}"
    )
    if first is None:
        print(f"{'(c) start to first plotted point':44}{'-':>10}  {'<= 3.0s':>9}  skipped")
    else:
        print(
            f"{'(c) start to first plotted point':44}{first:9.2f}s  {'<= 3.0s':>9}  "
            f"{verdict(first <= TARGETS['first_point_s'])}"
        )


if __name__ == "__main__":
    main()
