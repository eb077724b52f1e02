"""How long Stop takes at random moments of a real scenario, and what the folder holds after.

One full run of the scenario is timed first; then each trial starts the scenario afresh,
waits a moment drawn uniformly from [0, that duration], calls ``Session.stop`` and times
until the worker thread has ended. Every stopped folder is checked: ``summary.json`` at the
root and in every phase folder that was begun (status stopped, or completed for phases that
finished), every ``events.jsonl`` line parses, and a phase that trained keeps its checkpoint.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stop_latency.py [--scenario classic]
        [--moments 50] [--epochs 1] [--seed 0] [--dataset auto]

Prints p50 / p95 / max latency (target: max <= 2 s), where the worst moments fell (the
phase and what the worker was doing), and any folder that is incomplete.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from engine.events import Event, Phase
from engine.studies.scenarios import load_scenario
from wmtui.tui.sessions import scenario_session

TARGET_S = 2.0
TRAINING = ("train", "embed")


def start(scenario_name: str, overrides: dict[str, Any], out: Path) -> tuple[Any, list[Event]]:
    """A scenario session whose events are drained in the background (as the app does)."""
    session, _ = scenario_session(load_scenario(scenario_name), overrides, out)
    events: list[Event] = []
    session.start()

    def drain() -> None:
        for event in session.events():
            events.append(event)

    threading.Thread(target=drain, daemon=True).start()
    return session, events


def folder_problems(root: Path) -> list[str]:
    """What a stopped scenario folder lacks; empty when it is complete."""
    problems = []
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and p.name[:2].isdigit())]
    for folder in folders:
        summary = folder / "summary.json"
        try:
            status = json.loads(summary.read_text())["status"]
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{summary}: {type(exc).__name__}")
            continue
        if status not in ("stopped", "completed"):
            problems.append(f"{summary}: status {status}")
        for line in (folder / "events.jsonl").read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                problems.append(f"{folder / 'events.jsonl'}: torn line")
        metrics = folder / "metrics.jsonl"
        trains = json.loads((folder / "manifest.json").read_text()).get("command") in TRAINING
        trained = trains and metrics.is_file() and metrics.stat().st_size > 0
        if folder is not root and trained and not (folder / "checkpoint.safetensors").is_file():
            problems.append(f"{folder}: trained but kept no checkpoint")
    return problems


def where(events: list[Event]) -> str:
    phases = [e for e in events if isinstance(e, Phase) and e.status == "start"]
    last = type(events[-1]).__name__ if events else "nothing yet"
    return f"{phases[-1].name if phases else 'loading'} (last event: {last})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="classic")
    parser.add_argument("--moments", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--dataset", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    overrides = {"epochs": args.epochs, "dataset": args.dataset}
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        began = time.monotonic()
        session, _ = start(args.scenario, overrides, Path(tmp) / "full")
        session.join()
        duration = time.monotonic() - began
        print(f"{args.scenario} (epochs={args.epochs}, {args.dataset}): {duration:.1f} s in full")
        latencies: list[tuple[float, float, str]] = []
        incomplete: list[str] = []
        for trial in range(args.moments):
            moment = rng.uniform(0.0, duration)
            out = Path(tmp) / f"t{trial}"
            session, events = start(args.scenario, overrides, out)
            time.sleep(moment)
            asked = time.monotonic()
            session.stop(timeout=60.0)
            latency = time.monotonic() - asked
            latencies.append((latency, moment, where(events)))
            time.sleep(0.2)  # the drain thread's last events
            incomplete += folder_problems(out)
            print(f"  {trial + 1:2d}/{args.moments}: at {moment:5.1f} s stop took {latency:.3f} s")
    values = sorted(latency for latency, _, _ in latencies)
    p95 = values[min(len(values) - 1, round(0.95 * (len(values) - 1)))]
    print(
        f"\nstop latency over {len(values)} moments: p50 {statistics.median(values):.3f} s, "
        f"p95 {p95:.3f} s, max {values[-1]:.3f} s "
        f"(target max <= {TARGET_S:g} s: {'PASS' if values[-1] <= TARGET_S else 'FAIL'})"
    )
    for latency, moment, doing in sorted(latencies, reverse=True)[:3]:
        print(f"  slowest: {latency:.3f} s at {moment:.1f} s, in {doing}")
    print("folders complete" if not incomplete else "INCOMPLETE:\n  " + "\n  ".join(incomplete))


if __name__ == "__main__":
    main()
