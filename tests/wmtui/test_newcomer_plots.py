"""Plots at 80x24 as a newcomer reads them: no x-axis label is cut short (2000 read "200")."""

from __future__ import annotations

import pytest

from tests.wmtui.fakes import FakeSession, training_script
from wmtui.tui.app import WmtuiApp
from wmtui.tui.widgets.plots import nice_ticks, short_number


@pytest.mark.parametrize("steps", [2010, 1030, 530])
async def test_x_axis_labels_are_whole_at_80x24(steps: int) -> None:
    fake = FakeSession(training_script(steps, every=10))
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        app.pump()
        await pilot.pause()
        await pilot.pause()
        for selector in ("#acc-plot", "#loss-plot"):
            margin = app.query_one(selector).query_one("#margin-bottom")
            tokens = margin.render_line(0).text.split()
            whole = {f"{t:g}" for t in nice_ticks(steps, most=4)}
            whole |= {short_number(t) for t in nice_ticks(steps, most=4)}
            assert tokens and set(tokens) <= whole, (selector, tokens)
