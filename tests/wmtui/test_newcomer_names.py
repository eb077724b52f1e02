"""Names a newcomer finds things by: ctrl+s saves into the running phase's folder."""

from __future__ import annotations

from pathlib import Path

from engine.events import Event, Phase
from tests.wmtui.fakes import FakeSession
from wmtui.tui.app import WmtuiApp


def two_phases(root: Path) -> list[Event]:
    def marker(name: str, edge: str, index: int) -> Phase:
        info = {"scenario": "classic", "title": name, "run": str(root / f"0{index}-{name}")}
        return Phase(name, edge, index=index, total=2, info=info)

    return [
        marker("embed", "start", 1),
        Phase("embed", "start", info={"steps": 10, "run": str(root / "01-embed")}),
        Phase("embed", "end", info={"test_acc": 0.9}),
        marker("embed", "end", 1),
        marker("gan", "start", 2),
        Phase("gan", "start", info={"detector": "gan", "steps": 100}),
    ]


async def test_ctrl_s_saves_into_the_running_phase_s_folder(tmp_path: Path) -> None:
    for name in ("01-embed", "02-gan"):
        (tmp_path / name).mkdir()
    fake = FakeSession(two_phases(tmp_path))
    app = WmtuiApp(lambda: fake, refresh=4.0, run_path=tmp_path / "01-embed")
    async with app.run_test(size=(80, 24)) as pilot:
        app.pump()
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
    assert list((tmp_path / "02-gan").glob("*.svg")), "no screenshot in the running phase's folder"
    assert not list((tmp_path / "01-embed").glob("*.svg"))


def test_a_snapshot_mid_attack_is_named_by_its_phase_and_step(tmp_path: Path) -> None:
    """README: `snapshot-<phase>-step<N>/`; an attack's or a scan's snapshot was named
    `snapshot-ft-basic-<time>` (no step: the attack's loop did not say it)."""
    from engine import commands as cmd
    from engine.events import Log, Metrics
    from tests.engine.test_scenarios import ATTACK, run_scenario, tiny

    sent: list[int] = []
    scan = {"scan_steps": 4, "batch": 32, "images": 100, "val_images": 50, "remove": False}

    def steer(session, event) -> None:
        late = isinstance(event, Metrics) and event.phase == "ft-basic" and event.step >= 2
        if late and not sent:
            session.send(cmd.Followup("detect", "neural-cleanse", scan, {}))
            sent.append(event.step)
        back = isinstance(event, Log) and "back to ft-basic" in event.message
        runaway = isinstance(event, Metrics) and event.step >= 3_000  # the test fails, not hangs
        if back or runaway:
            session.send(cmd.Stop())

    # an attack far longer than the test: the worker cannot finish it before it reads the
    # command (a 6-step attack could, on a fast machine), and Stop ends it once the scan is back
    long_attack = {**ATTACK, "budget": {"data_fraction": 0.5, "steps": 100_000}}
    raw = tiny([{"name": "embed", "kind": "embed", "scheme": "pattern"}, long_attack])
    session, _ = run_scenario(raw, tmp_path / "s", steer)
    assert session.status == "stopped" and sent
    names = [p.name for p in (tmp_path / "s").glob("snapshot-*")]
    assert len(names) == 1 and names[0].startswith("snapshot-ft-basic-step"), names
    step = int(names[0].removeprefix("snapshot-ft-basic-step").split("-")[0])
    assert step >= sent[0]
