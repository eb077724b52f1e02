"""SIGTERM and SIGHUP on the real ``wmtui`` script: the run stops at its next safe point and
its folder ends complete (summary naming the signal, a loadable checkpoint), the process
exits 143 / 129 within 2 s, and ``wmtui resume`` goes on from there.

Every case runs a real subprocess on a tiny synthetic run. Where the exit latency is measured,
the bound is 2 s plus a margin for this suite's machines: the stop itself answers within a
step (milliseconds), but a shared 2-core runner can leave a process unscheduled for a second
or more, which is not what these tests are about (benchmarks/signals.py measures the latency
on a quiet machine at 30 moments).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.runs import RunDir

WMTUI = Path(sys.executable).with_name("wmtui")
#: the 2 s bound plus the scheduling margin explained above
EXIT_WITHIN_S = 2.0 + 2.0
TINY = ["--dataset", "synthetic", "--train-size", "2048", "--test-size", "128"]
SLOW = [*TINY, "--batch-size", "4", "--epochs", "2", "--eval-every", "50"]  # ~1000 steps
SCENARIO = """
title = "signalled"
[train]
dataset = "synthetic"
train_size = 2048
test_size = 128
epochs = 2
batch_size = 4
eval_every = 50

[[phases]]
name = "embed"
kind = "embed"
scheme = "pattern"
"""

pytestmark = pytest.mark.skipif(not WMTUI.is_file(), reason="needs the installed wmtui script")


def environment(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "WMTUI_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}


def hangup_as_a_terminal_leaves_it() -> None:
    """The child's SIGHUP as a login shell starts it: a suite launched under ``nohup``
    passes SIGHUP ignored down to its children, and wmtui rightly keeps running then."""
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start(args: list[str], data_dir: Path, **popen: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(WMTUI), *args],
        env=environment(data_dir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=hangup_as_a_terminal_leaves_it,
        **popen,
    )


def wait_for_event(process: subprocess.Popen[str], kind: str) -> dict[str, Any]:
    """Read ``--json`` lines until one of event ``kind``."""
    assert process.stdout is not None
    for line in process.stdout:
        event = json.loads(line)
        if event.get("event") == kind:
            return event
    raise AssertionError(f"the run ended before a {kind!r} event: {process.stderr.read()}")


def signal_and_time(process: subprocess.Popen[str], signum: int) -> tuple[float, str]:
    asked = time.monotonic()
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    return time.monotonic() - asked, err


def render(data_dir: Path) -> None:
    from engine.data import load_dataset

    load_dataset("synthetic", data_dir, train_size=2048, test_size=128)


@pytest.mark.parametrize("command", ["train", "embed"])
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_stops_a_headless_run_which_resume_continues(
    command: str, signum: int, tmp_path: Path, isolated_data: Path
) -> None:
    render(isolated_data)
    out = tmp_path / "run"
    process = start([command, *SLOW, "--json", "--out", str(out)], isolated_data)
    first = wait_for_event(process, "checkpoint" if command == "train" else "metrics")
    took, err = signal_and_time(process, signum)

    assert process.returncode == 128 + signum, err
    assert took < EXIT_WITHIN_S, f"{signal.Signals(signum).name} took {took:.2f} s"
    assert "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())
    name = signal.Signals(signum).name
    assert summary["status"] == "stopped" and summary["signal"] == name
    model, _, state = RunDir(out).load_checkpoint()  # loadable, and where the summary says
    assert model and state["step"] == summary["checkpoint_step"] >= first.get("step", 1)

    resumed = subprocess.run(
        [str(WMTUI), "resume", str(out), "--json"],
        env=environment(isolated_data),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    events = [json.loads(line) for line in resumed.stdout.splitlines()]
    logs = " ".join(e["message"] for e in events if e["event"] == "log")
    if command == "train":  # the owner's training goes on from the checkpoint
        assert f"from step {state['step']}" in logs
        steps = [e["step"] for e in events if e["event"] == "metrics"]
        assert steps and min(steps) > state["step"]
    else:  # an embedding starts again: its key and model are made afresh, as one run
        assert "from the start" in logs
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


def test_a_signal_before_the_first_checkpoint_says_so_and_resume_starts_over(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"  # nothing rendered yet: the worker spends seconds on it
    out = tmp_path / "run"
    args = ["train", *TINY, "--train-size", "12000", "--batch-size", "128", "--epochs", "1"]
    process = start([*args, "--json", "--out", str(out)], data)
    wait_for_event(process, "log")  # the thread choice, logged as the worker starts
    took, err = signal_and_time(process, signal.SIGTERM)

    assert process.returncode == 143, err
    assert took < EXIT_WITHIN_S
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["signal"] == "SIGTERM"
    assert summary["checkpoint_step"] is None and "from the start" in summary["resume"]
    assert not (out / "checkpoint.safetensors").exists()

    resumed = subprocess.run(
        [str(WMTUI), "resume", str(out), "--json"],
        env=environment(data),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "before its first checkpoint" in resumed.stdout
    done = json.loads((out / "summary.json").read_text())
    assert done["status"] == "completed" and done["steps"] == -(-12000 // 128)


def test_a_signalled_scenario_resumes_from_its_first_unfinished_phase(
    tmp_path: Path, isolated_data: Path
) -> None:
    render(isolated_data)
    scenario = tmp_path / "two.toml"
    scenario.write_text(SCENARIO.replace("epochs = 2", "epochs = 1") + SECOND_PHASE)
    out = tmp_path / "run"
    process = start(["run", str(scenario), "--json", "--out", str(out)], isolated_data)
    while wait_for_event(process, "phase").get("name") != "ft":
        pass  # the embedding completed; the attack on it has begun
    wait_for_event(process, "metrics")
    took, err = signal_and_time(process, signal.SIGHUP)
    assert process.returncode == 129 and took < EXIT_WITHIN_S, err
    phases = json.loads((out / "summary.json").read_text())["phases"]
    assert [p["status"] for p in phases] == ["completed", "stopped"]
    embedded = (out / "01-embed" / "model.safetensors").stat().st_mtime_ns

    resumed = subprocess.run(
        [str(WMTUI), "resume", str(out)],
        env=environment(isolated_data),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "phase embed: completed in an earlier run, kept" in resumed.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert [p["status"] for p in summary["phases"]] == ["completed", "completed"]
    assert (out / "01-embed" / "model.safetensors").stat().st_mtime_ns == embedded


SECOND_PHASE = """
[[phases]]
name = "ft"
kind = "attack"
attack = "ft-basic"
budget = { data_fraction = 0.5, epochs = 40 }  # ~900 steps: seconds
"""


def test_a_second_signal_ends_at_once_and_leaves_a_whole_checkpoint(
    tmp_path: Path, isolated_data: Path
) -> None:
    render(isolated_data)
    out = tmp_path / "run"
    # resnet18: each checkpoint writes ~90 MB, so the first stop takes a while to save
    args = ["train", *SLOW, "--model", "resnet18", "--json", "--out", str(out)]
    process = start(args, isolated_data)
    wait_for_event(process, "metrics")
    process.send_signal(signal.SIGTERM)
    time.sleep(0.6)  # past the window in which a repeat is the same stop delivered twice
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    asked = time.monotonic()
    process.communicate(timeout=30)
    assert time.monotonic() - asked < EXIT_WITHIN_S
    assert process.returncode in (143, -signal.SIGTERM)
    if (out / "checkpoint.json").exists():  # whichever checkpoint is there is whole
        model, _, state = RunDir(out).load_checkpoint()
        assert model and state["step"] >= 0
    if (out / "summary.json").exists():
        assert json.loads((out / "summary.json").read_text())["status"] == "stopped"


def test_sigterm_to_a_local_sweeps_process_group_leaves_no_process(
    tmp_path: Path, isolated_data: Path
) -> None:
    from engine.studies.presets import preset_dir

    grid = tmp_path / "tiny.toml"
    minimal = (preset_dir("sweep grid") / "minimal.toml").read_text()
    grid.write_text(minimal.replace("train_size = 4096", "train_size = 1024"))
    out = tmp_path / "sweep"
    args = ["sweep", str(grid), "--workers", "2", "--out", str(out), "--json"]
    driver = start(args, isolated_data, start_new_session=True)
    try:
        wait_for_event(driver, "trial")  # a trial started in a worker
        time.sleep(1.0)  # into its training
        os.killpg(driver.pid, signal.SIGTERM)  # what a scheduler or systemd sends
        driver.communicate(timeout=30)
        assert driver.returncode == 143
        deadline = time.monotonic() + 5.0
        while group_alive(driver.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not group_alive(driver.pid), "a process of the sweep outlived SIGTERM by 5 s"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    trials = [json.loads(p.read_text()) for p in out.glob("trials/*/summary.json")]
    assert trials and all(t["status"] in ("stopped", "completed") for t in trials)
    assert any(t.get("signal") == "SIGTERM" for t in trials if t["status"] == "stopped")


def test_sigterm_to_a_ray_sweeps_process_group_leaves_no_process(
    tmp_path: Path, isolated_data: Path
) -> None:
    """The same on a private Ray: its GCS, raylet and helpers share the driver's process
    group, but a trial's actor runs in a group of its own; every one of them names or holds
    the private Ray's temp folder, which is how this test (and the sweep) finds them."""
    pytest.importorskip("ray")
    from engine.studies.presets import preset_dir
    from engine.studies.sweep_ray import _short_tmp

    grid = tmp_path / "tiny.toml"
    minimal = (preset_dir("sweep grid") / "minimal.toml").read_text()
    grid.write_text(minimal.replace("train_size = 4096", "train_size = 1024"))
    out = tmp_path / "sweep"
    args = ["sweep", str(grid), "--backend", "ray", "--workers", "1", "--out", str(out)]
    driver = start([*args, "--json"], isolated_data, start_new_session=True)
    try:
        wait_for_event(driver, "trial")  # Ray is up and a trial started in an actor
        temps = [str(t) for t in Path(_short_tmp()).glob(f"wmtui-ray-{driver.pid}-*")]
        assert temps, "no private Ray folder for this sweep"
        asked = time.monotonic()
        os.killpg(driver.pid, signal.SIGTERM)
        driver.communicate(timeout=60)
        took = time.monotonic() - asked
        assert driver.returncode == 143 and took <= EXIT_WITHIN_S, (driver.returncode, took)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and (ray_processes(temps[0]) or group_alive(driver.pid)):
            time.sleep(0.2)
        assert ray_processes(temps[0]) == [], "Ray processes outlived SIGTERM by 5 s"
        assert not group_alive(driver.pid), "a process of the sweep outlived SIGTERM by 5 s"
        assert not Path(temps[0]).exists()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    results = json.loads((out / "summary.json").read_text())
    assert results  # the sweep's own files were written before it ended


def ray_processes(temp: str) -> list[int]:
    from engine.studies.sweep_ray import _uses

    return [
        int(entry.name)
        for entry in Path("/proc").glob("[0-9]*")
        if int(entry.name) != os.getpid() and _uses(entry, temp)
    ]


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def watch_in_a_browser(port: int, until: Path, timeout: float) -> tuple[Any, Any]:
    """Connect as a browser tab does and read its screen until ``until`` exists; returns the
    client session and its open websocket."""
    import asyncio

    import aiohttp

    deadline = time.monotonic() + timeout
    session = aiohttp.ClientSession()
    while True:  # the server is up once it accepts a connection
        try:
            socket = await session.ws_connect(f"http://127.0.0.1:{port}/ws?width=100&height=30")
            break
        except aiohttp.ClientError:
            assert time.monotonic() < deadline, "the server never listened"
            await asyncio.sleep(0.2)
    while not until.exists():
        assert time.monotonic() < deadline, f"the tab never wrote {until}"
        with contextlib.suppress(asyncio.TimeoutError):
            await socket.receive(timeout=0.2)
    return session, socket


def test_sigterm_to_serve_stops_every_tab_cleanly_and_ends_within_2_s(
    tmp_path: Path, isolated_data: Path
) -> None:
    import asyncio

    from wmtui.cli.replay import descendants, running

    render(isolated_data)
    scenario = tmp_path / "signalled.toml"
    scenario.write_text(SCENARIO)
    port, tab_run = free_port(), tmp_path / "tab"
    args = ["serve", "--port", str(port), "--scenario", str(scenario), "--", "--out", str(tab_run)]
    server = start(args, isolated_data)
    loop = asyncio.new_event_loop()
    client = None
    try:
        checkpoint = tab_run / "01-embed" / "checkpoint.json"
        client = loop.run_until_complete(watch_in_a_browser(port, checkpoint, timeout=90))
        tabs = descendants(server.pid)
        assert tabs, "no tab process under the server"
        took, err = signal_and_time(server, signal.SIGTERM)
        assert server.returncode == 143, err
        assert took < EXIT_WITHIN_S, f"serve took {took:.2f} s"
        assert not any(running(pid) for pid in tabs), "a tab outlived its server"
    finally:
        with contextlib.suppress(ProcessLookupError):
            server.kill()
        if client is not None:
            loop.run_until_complete(client[1].close())
            loop.run_until_complete(client[0].close())
        loop.close()
    summary = json.loads((tab_run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["signal"] == "SIGTERM"
    phase = json.loads((tab_run / "01-embed" / "summary.json").read_text())
    assert phase["status"] == "stopped" and phase["checkpoint_step"] is not None


@pytest.mark.parametrize("how", ["SIGTERM", "hangup"])
def test_the_playground_in_a_terminal_keeps_its_run(
    how: str, tmp_path: Path, isolated_data: Path
) -> None:
    """SIGTERM to the playground, or its terminal closing (tmux's kill-session hangs the
    terminal up, as a dropped SSH session does: SIGHUP to the process): the worker stops,
    the run folder is complete, and the process is gone within 2 s (plus the margin)."""
    from tests.wmtui.test_tmux import BRAILLE, Terminal, ensure_tmux, split_screen
    from wmtui.cli.replay import running

    tmux = ensure_tmux()
    render(isolated_data)
    scenario = tmp_path / "signalled.toml"
    scenario.write_text(SCENARIO)
    run = tmp_path / "run"
    command = [
        "env",
        f"WMTUI_DATA_DIR={isolated_data}",
        "OMP_NUM_THREADS=1",
        str(WMTUI),
        *("tui", "--scenario", str(scenario), "--out", str(run)),
    ]
    term = Terminal(tmux, tmp_path, (100, 30), command)
    try:
        term.wait_for("a plotted point", lambda p: BRAILLE.search(split_screen(p)[0]), 60)
        shell = int(term.tmux("display", "-p", "-t", "t", "#{pane_pid}"))
        pid = int((Path(f"/proc/{shell}/task/{shell}/children")).read_text().split()[0])
        asked = time.monotonic()
        if how == "SIGTERM":
            os.kill(pid, signal.SIGTERM)
        else:
            term.tmux("kill-session", "-t", "t")
        while running(pid) and time.monotonic() - asked < 30:
            time.sleep(0.05)
        took = time.monotonic() - asked
        assert took < EXIT_WITHIN_S, f"{how}: the playground took {took:.2f} s"
        if how == "SIGTERM":  # the shell around it is still there to record the status
            deadline = time.monotonic() + 5
            while term.exit_code() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert term.exit_code() == 143, term.dump()
    finally:
        term.close()
    name = "SIGTERM" if how == "SIGTERM" else "SIGHUP"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "stopped" and summary["signal"] == name
    phase = json.loads((run / "01-embed" / "summary.json").read_text())
    assert phase["status"] == "stopped" and phase["signal"] == name
    RunDir(run / "01-embed").load_checkpoint()


# -- wmtui attach: a run's dashboard from a new login ---------------------------------------
def test_following_a_file_waits_for_whole_lines_and_survives_a_bad_one(tmp_path: Path) -> None:
    from engine.events import Done, Log
    from wmtui.tui.follow import FollowSession

    run = tmp_path / "run"
    run.mkdir()
    events = run / "events.jsonl"
    events.write_text(json.dumps(Log("first").to_dict()) + "\n")
    session = FollowSession(run).start()
    assert [e.message for e in session.poll() if isinstance(e, Log)][-1] == "first"
    whole = json.dumps(Done("completed").to_dict())
    with events.open("a") as handle:
        handle.write("not json\n" + whole[:10])  # a corrupt line, then half of one
    polled = session.poll()
    assert [e.level for e in polled] == ["warning"] and not session.ended
    with events.open("a") as handle:
        handle.write(whole[10:] + "\n")
    assert any(isinstance(e, Done) for e in session.poll()) and session.ended


async def test_attach_shows_a_running_headless_run_live_and_leaves_it_going(
    tmp_path: Path, isolated_data: Path
) -> None:
    import asyncio

    from wmtui.tui.attach_app import AttachApp
    from wmtui.tui.follow import FollowSession

    render(isolated_data)
    out = tmp_path / "run"
    process = subprocess.Popen(  # long enough to outlive the test, which ends it below
        [str(WMTUI), "train", *SLOW, "--epochs", "50", "--out", str(out)],
        env=environment(isolated_data),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "events.jsonl").exists():
            assert time.monotonic() < deadline and process.poll() is None
            await asyncio.sleep(0.1)
        app = AttachApp(lambda: FollowSession(out), refresh=10)
        async with app.run_test(size=(120, 40)) as pilot:
            while not app.state.loss_series.x:  # the first plotted point, read from the file
                assert time.monotonic() < deadline, "attach never showed a point"
                await pilot.pause(0.1)
            seen = len(app.state.loss_series.x)
            await pilot.pause(1.5)
            assert len(app.state.loss_series.x) > seen, "the view did not follow the run"
            before = (out / "events.jsonl").stat().st_size
            await pilot.press("s")  # stop: a watcher never steers the run
            await pilot.pause(0.3)
            await pilot.press("ctrl+q")
        assert "the run goes on" in app.exit_message
        assert process.poll() is None, "detaching ended the run"
        assert (out / "events.jsonl").stat().st_size >= before
        assert not (out / "summary.json").exists()  # still running: nothing was stopped
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert process.returncode == 143


def test_the_helpers_a_private_ray_leaves_behind_are_ended(tmp_path: Path) -> None:
    """Ray's helpers rename themselves (``ray::DashboardAgent``), so they are found by the
    private temp folder they log into or name; other processes are left alone."""
    from engine.studies.sweep_ray import end_processes_of

    temp = tmp_path / "wmtui-ray-1-abc"
    (temp / "logs").mkdir(parents=True)
    sleeper = "import sys, time; time.sleep(60)"
    named = subprocess.Popen([sys.executable, "-c", sleeper, str(temp / "session")])
    with (temp / "logs" / "dashboard.log").open("w") as log:
        logging = subprocess.Popen([sys.executable, "-c", sleeper], stdout=log)
    other = subprocess.Popen([sys.executable, "-c", sleeper])
    try:
        time.sleep(0.3)  # let each process exist under its command line and files
        killed = set(end_processes_of(str(temp)))
        assert {named.pid, logging.pid} <= killed and other.pid not in killed
        assert named.wait(5) == logging.wait(5) == -signal.SIGKILL
        assert other.poll() is None
    finally:
        for process in (named, logging, other):
            process.kill()
            process.wait()
