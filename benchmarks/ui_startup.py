"""The playground's start-up, measured from outside: a fresh interpreter's import times, and
``wmtui`` spawned in a private tmux server, polled for each milestone on screen and on disk
until the first plotted point. Part of ``ui_overhead.py`` (which reports it), apart because
it needs no Textual internals."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

from engine.runs import RunDir

SIZE = (100, 30)
BRAILLE = re.compile("[\u2801-\u28ff]")  # U+2800 is the blank pattern: not a plotted dot


def wmtui_command() -> list[str]:
    script = Path(sys.executable).with_name("wmtui")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "wmtui.cli"]


def import_times() -> dict[str, float]:
    """Seconds to import what ``wmtui`` loads before its first point, in its order, in a fresh
    interpreter (and, for reference, torch._dynamo: a torch.optim optimizer imports it, 1.1 s
    that were on the path until the training loop got its own SGD and Adam; now only the
    trigger searches pay it); and what leaving that interpreter costs,
    which is paid again at quit. torchvision is no longer on the list: the manifest reads its
    version from package metadata, and tests/engine/test_imports.py keeps it off the path."""
    code = (
        "import os, time; t = [time.perf_counter()]; import torch; t.append(time.perf_counter()); "
        "import wmtui.cli; t.append(time.perf_counter()); import wmtui.tui.app; "
        "t.append(time.perf_counter()); import torch._dynamo; t.append(time.perf_counter()); "
        "print(*(b - a for a, b in zip(t, t[1:])), flush=True)"
    )
    walls, outputs = [], []
    for leave in ("; os._exit(0)", ""):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", code + leave], capture_output=True, text=True, check=True
        )
        walls.append(time.perf_counter() - started)
        outputs.append([float(v) for v in done.stdout.split()])
    names = (
        "import torch",
        "rest of the CLI (typer, engine)",
        "the app (textual, textual-plot)",
        "(torch._dynamo: trigger searches only)",
    )
    return {
        "interpreter start": walls[0] - sum(outputs[0]),
        **dict(zip(names, outputs[0], strict=True)),
        "(at quit: interpreter exit)": walls[1] - walls[0] - sum(outputs[1]) + sum(outputs[0]),
    }


def startup(
    args: list[str], folder: Path, *, until_point: bool = True, timeout: float = 60.0
) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds from spawning ``wmtui ARGS`` in a fresh tmux server to each milestone on screen
    or on disk, polled every ~20 ms, until the first plotted point (or, without
    ``until_point``, the app's first frame); the process is then asked to quit, and the server
    killed. Also, from the run's events, when the worker had the dataset and the first
    reading, in seconds since the session started (the worker's own clock)."""
    folder.mkdir(parents=True)
    conf = folder / "tmux.conf"
    conf.write_text("set -g status off\n")  # the pane gets the whole 100x30
    tmux = ["tmux", "-L", f"wmtui-bench-{os.getpid()}-{folder.name}", "-f", str(conf)]
    client_env = {k: v for k, v in os.environ.items() if k != "TMUX"}
    command = shlex.join(["env", "-u", "COLUMNS", "-u", "LINES", *wmtui_command(), *args])
    size = ["-x", str(SIZE[0]), "-y", str(SIZE[1])]
    marks: dict[str, float] = {}
    started = time.perf_counter()
    subprocess.run(
        [*tmux, "new-session", "-d", "-s", "b", *size, "-c", str(folder), command],
        env=client_env,
        check=True,
    )
    socket = subprocess.run(
        [*tmux, "display", "-p", "#{socket_path}"], capture_output=True, text=True
    ).stdout.strip()
    pane = ""
    goal = "first plotted point" if until_point else "first frame of the app"
    try:
        while goal not in marks:
            now = time.perf_counter() - started
            if now > timeout:
                raise SystemExit(f"no {goal} within {timeout:.0f} s; the pane:\n{pane}")
            pane = subprocess.run(
                [*tmux, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True
            ).stdout
            if "wmtui" in pane:
                marks.setdefault("first frame of the app", now)
            for run in folder.glob("runs/*"):
                if (run / "manifest.json").is_file():
                    marks.setdefault("run directory created", now)
                recorded = run / "events.jsonl"
                text = recorded.read_text(encoding="utf-8") if recorded.is_file() else ""
                if '"dataset: ' in text:
                    marks.setdefault("dataset loaded (log line on disk)", now)
                if '"event": "metrics"' in text:
                    marks.setdefault("first metrics on disk (step 20)", now)
            if "RUNNING" in pane:
                marks.setdefault("phase started: RUNNING on screen", now)
            if BRAILLE.search(pane):
                marks["first plotted point"] = now
            time.sleep(0.02)
    finally:
        subprocess.run([*tmux, "send-keys", "-t", "b", "C-q"], capture_output=True)
        deadline = time.perf_counter() + 3.0
        while time.perf_counter() < deadline:
            alive = subprocess.run([*tmux, "has-session", "-t", "b"], capture_output=True)
            if alive.returncode:
                break
            time.sleep(0.05)
        subprocess.run([*tmux, "kill-server"], capture_output=True)
        if socket:
            Path(socket).unlink(missing_ok=True)  # tmux leaves it behind
    worker: dict[str, float] = {}
    for run in folder.glob("runs/*"):
        recorded = RunDir(run).events()
        dataset = [e for e in recorded if str(e.get("message", "")).startswith("dataset:")]
        metrics = [e for e in recorded if e.get("event") == "metrics"]
        if dataset:
            worker["dataset loaded"] = dataset[0]["time"]
        if metrics:
            worker[f"first metrics (step {metrics[0]['step']})"] = metrics[0]["time"]
    return marks, worker
