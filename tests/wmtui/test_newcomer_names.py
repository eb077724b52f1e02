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
