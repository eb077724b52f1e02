import time

import pytest

from engine import commands as cmd
from engine.config import TrainConfig
from engine.events import Error
from engine.runs import RunDir
from tests.wmtui.fakes import FakeSession, training_script
from wmtui.tui.app import WmtuiApp
from wmtui.tui.sessions import training_session


async def test_keys_reach_the_session_and_are_acknowledged() -> None:
    fake = FakeSession(training_script(100))
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(100, 30)) as pilot:
        app.pump()
        await pilot.press("space")
        app.pump()
        assert app.state.status == "paused"
        await pilot.press("space", "plus", "minus", "s")
        app.pump()
        await pilot.pause()
    kinds = [type(c) for c in fake.sent]
    assert kinds == [cmd.Pause, cmd.Resume, cmd.ScaleLR, cmd.ScaleLR, cmd.Stop]
    assert [c.factor for c in fake.sent if isinstance(c, cmd.ScaleLR)] == [2.0, 0.5]
    assert app.state.status == "stopped"


async def test_plot_data_grows_with_metrics() -> None:
    fake = FakeSession(training_script(100)[:4])
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(100, 30)) as pilot:
        app.pump()
        first = len(app.state.loss_series.x)
        plot = app.query_one("#loss-plot")
        assert len(plot._datasets) == 1 and len(plot._datasets[0].x) == first
        fake.feed(*training_script(100)[4:])
        for _ in range(200):  # the timer, not the test, repaints: wait until it has
            await pilot.pause(0.05)
            if len(plot._datasets[0].x) > first:
                break
        assert len(app.state.loss_series.x) > first
        assert len(plot._datasets[0].x) == len(app.state.loss_series.x)
        assert app.state.acc_series.y[-1] > app.state.acc_series.y[0]


async def test_errors_keep_the_app_up_and_are_shown() -> None:
    fake = FakeSession(training_script(40))
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(100, 30)) as pilot:
        fake.feed(Error("loss became non-finite at step 33; phase 'train' stopped", step=33))
        app.pump()
        await pilot.pause()
        status = str(app.query_one("#status").render())
        assert "non-finite at step 33" in status
        assert app.is_running


async def test_quit_mid_training_ends_the_worker_quickly(tmp_path) -> None:
    config = TrainConfig(
        dataset="synthetic", epochs=50, train_size=512, test_size=128, eval_every=2
    )
    sessions = []

    def factory():
        run = RunDir.create(tmp_path / "run", {"config": config.to_dict()})
        sessions.append(training_session(config, run))
        return sessions[-1]

    app = WmtuiApp(factory, refresh=4.0)
    async with app.run_test(size=(80, 24)) as pilot:
        for _ in range(50):
            await pilot.pause(0.1)
            if app.state.step > 0:
                break
        assert app.state.step > 0
        started = time.monotonic()
        await pilot.press("ctrl+q")
    # quit latency, the product's 2 s promise: the worker checks Stop between batches of a
    # tiny model (milliseconds); the margin is for a busy 2-core machine, while a worker
    # that finished its epoch first would take far longer (50 epochs are asked for)
    assert time.monotonic() - started < 2.0
    assert not sessions[0].running
    assert "session stopped" in app.exit_message


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
def test_dashboard_snapshot(snap_compare, size) -> None:
    fake = FakeSession(training_script(200))

    async def settle(pilot) -> None:
        pilot.app.pump()
        await pilot.pause()

    app = WmtuiApp(lambda: fake, refresh=2.0)
    app.theme = "textual-dark"
    assert snap_compare(app, terminal_size=size, run_before=settle)


async def test_trigger_label_and_exact_lr_controls() -> None:
    fake = FakeSession(training_script(40))
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(100, 30)) as pilot:
        app.pump()
        await pilot.press("t", "t")
        await pilot.press("l")
        await pilot.press("x", "enter")  # refused in place: the prompt stays open
        assert "not a whole number" in str(app.screen.query_one("#prompt-error").render())
        await pilot.press("backspace", "3", "enter")
        await pilot.press("r", "n", "a", "n", "enter")
        assert "out of range" in str(app.screen.query_one("#prompt-error").render())
        await pilot.press("escape")  # cancelled: nothing is sent
        await pilot.press("r", "0", ".", "0", "2", "enter")
        await pilot.pause()
    assert fake.sent == [
        cmd.SetTrigger("next"),  # the worker picks the trigger after the key's own
        cmd.SetTrigger("next"),
        cmd.SetTargetLabel(3),
        cmd.SetLR(0.02),
    ]


async def test_scan_bars_outlier_and_previews() -> None:
    from tests.wmtui.fakes import scan_script

    fake = FakeSession(training_script(40) + scan_script(target=4))
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(120, 36)) as pilot:
        app.pump()
        await pilot.pause()
        assert app.dashboard.has_class("scanning")
        bars = app.query_one("#bars")
        heights = next(list(d.y) for d in bars._datasets if type(d).__name__ == "BarPlot")
        assert len(heights) == 10 and min(range(10), key=heights.__getitem__) == 4
        assert app.state.scan_outlier() == 4
        assert app.query_one("#preview-0").image is not None
        assert app.query_one("#preview-1").border_title == "reversed"
        assert "flagged class: 4" in "\n".join(app.query_one("#log").lines)


def test_scan_snapshot(snap_compare) -> None:
    from tests.wmtui.fakes import scan_script

    fake = FakeSession(training_script(40) + scan_script(target=7))

    async def settle(pilot) -> None:
        pilot.app.pump()
        await pilot.pause()

    app = WmtuiApp(lambda: fake, refresh=2.0)
    app.theme = "textual-dark"
    assert snap_compare(app, terminal_size=(100, 30), run_before=settle)


async def test_attack_picker_starts_a_follow_up_phase_on_the_saved_model(tmp_path) -> None:
    """Embed a watermark (tiny), press `a`, accept ft-basic: the attack runs on that model."""
    from engine.watermarks import parse_scheme_params

    config = TrainConfig(
        dataset="synthetic", epochs=1, train_size=512, test_size=128, batch_size=64, eval_every=4
    )
    run = RunDir.create(tmp_path / "run", {"config": config.to_dict()})
    params = parse_scheme_params("pattern", {"trigger": "square"})
    app = WmtuiApp(
        lambda: training_session(config, run, "pattern", params), refresh=4.0, run_path=run.path
    )
    async with app.run_test(size=(100, 32)) as pilot:
        for _ in range(100):
            await pilot.pause(0.1)
            if app.state.status == "completed":
                break
        assert app.state.status == "completed" and "key" in app.state.retention
        await pilot.press("a")
        await pilot.pause()
        app.screen.query_one("#budget-epochs").value = "1"
        await pilot.press("enter")
        for _ in range(100):
            await pilot.pause(0.1)
            if app.state.phase == "ft-basic" and app.state.status == "completed":
                break
        assert app.state.phase == "ft-basic" and app.state.status == "completed"
        assert app.run_path is not None and app.run_path != run.path
        assert (app.run_path / "model.safetensors").is_file()
        assert len(app.state.phase_starts) == 2  # the embed phase, then the attack
        await pilot.press("ctrl+q")


async def test_help_and_svg_screenshot(tmp_path) -> None:
    fake = FakeSession(training_script(40))
    app = WmtuiApp(lambda: fake, refresh=4.0, run_path=tmp_path)
    async with app.run_test(size=(100, 30)) as pilot:
        app.pump()
        await pilot.press("question_mark")
        await pilot.pause()
        assert "ctrl+q" in str(app.screen.query_one("#help-text").render())
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
    svgs = list(tmp_path.glob("*.svg"))
    assert len(svgs) == 1 and "<svg" in svgs[0].read_text()[:2000]
    assert fake.sent == []  # neither key is a command to the worker


async def test_the_true_trigger_preview_waits_for_a_scan() -> None:
    """The embedding previews its trigger at once; the loss plot stays until a scan starts."""
    import torch

    from engine.events import TriggerPreview
    from tests.wmtui.fakes import scan_script

    true = TriggerPreview.from_tensor("true trigger", torch.zeros(1, 28, 28, dtype=torch.uint8))
    fake = FakeSession([*training_script(40), true])
    app = WmtuiApp(lambda: fake, refresh=4.0)
    async with app.run_test(size=(120, 36)) as pilot:
        app.pump()
        await pilot.pause()
        assert not app.dashboard.has_class("scanning") and app.query_one("#loss-plot").display
        fake.feed(*scan_script(target=4))
        app.pump()
        await pilot.pause()
        assert app.dashboard.has_class("scanning")
        assert app.query_one("#preview-0").border_title == "true trigger"
        await pilot.resize_terminal(80, 24)
        app.pump()
        await pilot.pause()
        assert app.dashboard.has_class("compact")  # the previews give way on a small terminal


async def test_scan_key_mid_phase_asks_the_worker_and_never_ends_the_session() -> None:
    """`d` while training: the worker scans the model it holds now and goes on (defect: the
    scan used to stop the whole scenario and then read the scenario's root folder)."""
    fake = FakeSession(training_script(40))
    app = WmtuiApp(lambda: fake, refresh=4.0, run_path=None)
    async with app.run_test(size=(100, 32)) as pilot:
        app.pump()
        assert app.state.status == "running"
        await pilot.press("d")
        await pilot.pause(0.2)
        await pilot.press("enter")
        await pilot.pause(0.2)
        followups = [c for c in fake.sent if isinstance(c, cmd.Followup)]
        assert len(followups) == 1 and followups[0].kind == "detect"
        assert followups[0].plugin == "neural-cleanse"
        assert not fake.stopped and not any(isinstance(c, cmd.Stop) for c in fake.sent)
        await pilot.press("ctrl+q")
