"""The sweep browser at 80x24 as a newcomer meets it: a one-line title, a hint that the
metric columns are off to the right, a running trial's replay said to be so far, and the
results printed after quitting."""

from __future__ import annotations

import json
from pathlib import Path

from engine.events import Log, Metrics, Phase
from wmtui.tui.replay import ReplaySession
from wmtui.tui.sweep_app import SweepBrowser, results_text

METRICS = {
    "embed.test_acc": 0.97,
    "embed.retention.key": 0.99,
    "ftb.test_acc": 0.95,
    "ftb.retention.key": 0.12,
}


def sweep_folder(root: Path) -> Path:
    out = root / "runs" / "sweep-gan-data-fractions-20260101-120000"
    rows = []
    for i, (fraction, status) in enumerate([(0.05, "completed"), (0.1, "running")]):
        point = {"attack.budget.data_fraction": fraction, "train.learning_rate": 0.01, "seed": i}
        metrics = METRICS if status == "completed" else {}
        rows.append(
            {
                "trial": f"t{i}",
                "point": point,
                "status": status,
                "seconds": 12.0 if i else None,
                "metrics": metrics,
                "error": "",
                "run": f"trials/t{i}",
            }
        )
        (out / "trials" / f"t{i}").mkdir(parents=True)
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    events = [Phase("train", "start", info={"steps": 10}), Metrics("train", 5, 0.1, 0.1, 1.0, 9.0)]
    (out / "trials" / "t1" / "events.jsonl").write_text(
        "".join(json.dumps(e.to_dict()) + "\n" for e in [Log("hello"), *events])
    )
    summary = {
        "sweep": "gan-data-fractions",
        "trials": 2,
        "completed": 1,
        "failed": 0,
        "group_by": ["attack.budget.data_fraction"],
        "seed_axes": ["seed"],
        "metrics": ["ftb.test_acc"],
        "configs": [
            {
                "point": {"attack.budget.data_fraction": 0.05},
                "n": 1,
                "metrics": {"ftb.test_acc": {"mean": 0.95, "std": 0.0}},
            }
        ],
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return out


async def test_the_title_is_one_line_and_the_hidden_columns_are_announced(tmp_path) -> None:
    out = sweep_folder(tmp_path)
    app = SweepBrowser(out)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        title = app.query_one("#sweep-title")
        assert title.size.height == 1
        assert "trials completed" in str(title.render())
        note = str(app.query_one("#sweep-note").render())
        assert "→" in note and "more column" in note, note


async def test_enter_on_a_running_trial_says_it_is_running(tmp_path) -> None:
    out = sweep_folder(tmp_path)
    app = SweepBrowser(out, cursor=1)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
    assert app.return_value == out / "trials" / "t1" and app.live_trial
    session = ReplaySession(out / "trials" / "t1", 16.0, live=True)
    assert "still running" in session._end_message()
    assert "cut off" not in session._end_message()


def test_after_the_browser_the_results_and_their_files_are_printed(tmp_path) -> None:
    out = sweep_folder(tmp_path)
    text = results_text(out)
    assert "gan-data-fractions: 1/2 trials completed" in text
    assert "95.0 ± 0.0%" in text
    assert str(out / "results.csv") in text and "summary.json" in text
