"""SIGTERM and SIGHUP at random moments of a real scenario, headless and in the playground.

Each trial starts the real ``wmtui`` script afresh, waits a moment drawn uniformly from
[0, the duration of one full run], sends the signal, and times until the process is gone:

* headless: ``wmtui run SCENARIO --dataset synthetic ...`` in its own session; SIGTERM or
  SIGHUP to the process;
* playground: ``wmtui tui --scenario SCENARIO ...`` in a tmux pane; SIGTERM to the process,
  or the pane's terminal hung up (``tmux kill-session``, as a dropped SSH session does).

Then the folder is checked (the root's and every begun phase's summary stopped or completed,
the signal named, every events.jsonl line whole, a trained phase keeps a loadable checkpoint)
and ``wmtui resume`` must finish the run (exit 0, summary completed).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/signals.py [--moments 30] [--seed 0]
        [--scenario classic] [--scan-steps 40] [--targets headless,playground]

``--scan-steps`` shortens the scenario's scans so that a trial and its resume take seconds
(0: the preset as it ships). Prints one row per target and signal: exit time (median, max;
target: max <= 2 s), exit codes ("-": a hung-up pane's shell could not record it),
complete folders and working resumes out of the trials. A moment that comes after the run
has ended (runs vary in length on a shared machine) is drawn again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from engine.data import load_dataset
from engine.runs import RunDir
from engine.studies.scenarios import scenario_source

WMTUI = Path(sys.executable).with_name("wmtui")
TRAIN = ["--dataset", "synthetic", "--train-size", "2048", "--test-size", "256", "--epochs", "2"]
TARGET_S = 2.0
SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def quick_scenario(name: str, scan_steps: int, folder: Path) -> str:
    """The scenario with its scans shortened: every phase with a ``method`` (a detector)
    gets ``scan_steps`` in its params table."""
    if scan_steps <= 0:
        return name
    out: list[str] = []
    pending = False  # inside a detector phase whose params are not written yet
    for line in scenario_source(name).location.read_text(encoding="utf-8").splitlines():
        if line.startswith("[[phases]]") and pending:
            out.insert(len(out) - 1, f"params = {{ scan_steps = {scan_steps} }}")
        if line.startswith("[[phases]]"):
            pending = False
        if line.startswith("method = "):
            pending = True
        if pending and line.startswith("params = {"):
            line = line.replace("{", f"{{ scan_steps = {scan_steps},", 1)
            pending = False
        out.append(line)
    if pending:
        out.append(f"params = {{ scan_steps = {scan_steps} }}")
    path = folder / f"{name}-quick.toml"
    path.write_text("\n".join(out) + "\n")
    return str(path)


def env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "WMTUI_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}


def headless(scenario: str, out: Path, data_dir: Path) -> subprocess.Popen[bytes]:
    args = [str(WMTUI), "run", scenario, *TRAIN, "--out", str(out)]
    return subprocess.Popen(
        args,
        env=env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def full_duration(scenario: str, folder: Path, data_dir: Path) -> float:
    started = time.monotonic()
    code = headless(scenario, folder / "full", data_dir).wait()
    if code != 0:
        raise SystemExit(f"the full run failed (exit {code}): {folder / 'full'}")
    return time.monotonic() - started


class Pane:
    """One tmux server with one pane running the playground."""

    def __init__(self, tmux: str, folder: Path, command: list[str]) -> None:
        self.base = [tmux, "-L", f"wmtui-signals-{os.getpid()}", "-f", os.devnull]
        self.exit_file = folder / "exit-code"
        shell = f"{shlex.join(command)}; echo $? > {shlex.quote(str(self.exit_file))}"
        self.tmux("new-session", "-d", "-s", "b", "-x", "120", "-y", "40", shell)
        self.shell = int(self.tmux("display", "-p", "-t", "b", "#{pane_pid}"))

    def tmux(self, *args: str) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True, timeout=10)
        return done.stdout

    def wmtui_pid(self, timeout: float = 10.0) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                children = Path(f"/proc/{self.shell}/task/{self.shell}/children").read_text()
            except OSError:
                return None
            if children.split():
                return int(children.split()[0])
            time.sleep(0.02)
        return None

    def exit_code(self, timeout: float = 3.0) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.exit_file.read_text().strip() if self.exit_file.is_file() else ""
            if text:
                return int(text)
            time.sleep(0.05)
        return None

    def close(self) -> None:
        subprocess.run([*self.base, "kill-server"], capture_output=True, timeout=10)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def trial_headless(
    scenario: str, out: Path, data_dir: Path, signum: int, moment: float
) -> dict[str, Any]:
    process = headless(scenario, out, data_dir)
    time.sleep(moment)
    if process.poll() is not None:
        return {"skipped": True}
    asked = time.monotonic()
    process.send_signal(signum)
    try:
        code = process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    return {"took": time.monotonic() - asked, "code": code}


def trial_playground(
    tmux: str, scenario: str, out: Path, data_dir: Path, signum: int, moment: float
) -> dict[str, Any]:
    command = [
        "env",
        f"WMTUI_DATA_DIR={data_dir}",
        "OMP_NUM_THREADS=1",
        str(WMTUI),
        *("tui", "--scenario", scenario, *TRAIN, "--out", str(out)),
    ]
    pane = Pane(tmux, out.parent, command)
    try:
        pid = pane.wmtui_pid()
        time.sleep(moment)
        if pid is None or not alive(pid):
            return {"skipped": True}
        asked = time.monotonic()
        if signum == signal.SIGTERM:
            os.kill(pid, signal.SIGTERM)
        else:
            pane.tmux("kill-session", "-t", "b")  # the terminal hangs up: SIGHUP
        while alive(pid) and time.monotonic() - asked < 30:
            time.sleep(0.01)
        took = time.monotonic() - asked
        if alive(pid):
            os.kill(pid, signal.SIGKILL)
        # after a hangup the shell that would record the status is gone with the terminal
        code = pane.exit_code() if signum == signal.SIGTERM else None
        return {"took": took, "code": code}
    finally:
        pane.close()


def folder_problems(root: Path, name: str) -> list[str]:
    """What a signalled scenario folder lacks; empty when complete. No folder at all is fine
    when the signal came before the worker started (nothing was written)."""
    if not (root / "manifest.json").exists():
        return []
    problems = []
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and p.name[:2].isdigit())]
    for folder in folders:
        try:
            summary = json.loads((folder / "summary.json").read_text())
        except (OSError, ValueError) as exc:
            problems.append(f"{folder.name}/summary.json: {type(exc).__name__}")
            continue
        status = summary.get("status")
        if status not in ("stopped", "completed"):
            problems.append(f"{folder.name}: status {status}")
        if status == "stopped" and summary.get("signal") != name:
            problems.append(f"{folder.name}: signal {summary.get('signal')}")
        for line in (folder / "events.jsonl").read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                problems.append(f"{folder.name}/events.jsonl: torn line")
        if (folder / "checkpoint.json").exists():
            try:
                RunDir(folder).load_checkpoint()
            except Exception as exc:  # a torn checkpoint is what this benchmark hunts
                problems.append(f"{folder.name}: checkpoint does not load ({exc})")
    return problems


def resume_works(out: Path, data_dir: Path) -> bool | None:
    if not (out / "manifest.json").exists():
        return None  # nothing was written: there is nothing to resume
    done = subprocess.run(
        [str(WMTUI), "resume", str(out)], env=env(data_dir), capture_output=True, timeout=900
    )
    if done.returncode != 0:
        return False
    return json.loads((out / "summary.json").read_text()).get("status") == "completed"


def table(rows: dict[tuple[str, str], list[dict[str, Any]]]) -> str:
    head = (
        "| target | signal | trials | exit median | exit max | <= 2 s | exit codes "
        "| folder complete | resume works |"
    )
    lines = [head, "|" + "---|" * 9]
    for (target, name), results in rows.items():
        done = [r for r in results if not r.get("skipped")]
        took = [r["took"] for r in done]
        codes = sorted({"-" if r["code"] is None else str(r["code"]) for r in done})
        resumed = [r["resume"] for r in done if r["resume"] is not None]
        lines.append(
            f"| {target} | {name} | {len(done)} | "
            f"{statistics.median(took):.2f} s | {max(took):.2f} s | "
            f"{sum(t <= TARGET_S for t in took)}/{len(took)} | {', '.join(codes)} | "
            f"{sum(not r['problems'] for r in done)}/{len(done)} | "
            f"{sum(resumed)}/{len(resumed)} |"
            if done
            else f"| {target} | {name} | 0 | - | - | - | - | - | - |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moments", type=int, default=30, help="trials per target")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", default="classic")
    parser.add_argument("--scan-steps", type=int, default=40)
    parser.add_argument("--targets", default="headless,playground")
    args = parser.parse_args()
    # the trials must meet SIGHUP as a hung-up terminal sends it, even where this benchmark
    # itself runs under nohup (which they would inherit, and wmtui keeps an ignored SIGHUP)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    targets = args.targets.split(",")
    tmux = shutil.which("tmux")
    if "playground" in targets and tmux is None:
        print("tmux not found: the playground is left out", file=sys.stderr)
        targets.remove("playground")
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="wmtui-signals-") as tmp:
        folder, data_dir = Path(tmp), Path(tmp) / "data"
        load_dataset("synthetic", data_dir, train_size=2048, test_size=256)
        scenario = quick_scenario(args.scenario, args.scan_steps, folder)
        duration = full_duration(scenario, folder, data_dir)
        print(f"one full headless run: {duration:.1f} s", file=sys.stderr)
        rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for target in targets:
            n = tried = 0
            while n < args.moments and tried < 3 * args.moments:
                signum = SIGNALS[n % 2]
                name = signal.Signals(signum).name
                moment = rng.uniform(0.0, duration)
                out = folder / f"{target}-{tried}" / "run"
                out.parent.mkdir()
                tried += 1
                if target == "headless":
                    result = trial_headless(scenario, out, data_dir, signum, moment)
                else:
                    assert tmux is not None
                    result = trial_playground(tmux, scenario, out, data_dir, signum, moment)
                if not result.get("skipped"):  # else the run ended first: draw another
                    n += 1
                    result["problems"] = folder_problems(out, name)
                    result["resume"] = resume_works(out, data_dir)
                rows.setdefault((target, name), []).append(result)
                print(f"{target} {name} at {moment:5.1f} s: {result}", file=sys.stderr)
    print(table(rows))


if __name__ == "__main__":
    main()
