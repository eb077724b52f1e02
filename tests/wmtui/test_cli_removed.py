"""``wmtui attack`` shows the SoK verdict and the cost, and lists attacks by family."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from engine.attacks import ATTACKS, FAMILIES
from wmtui.cli import app
from wmtui.cli import attacks as cli_attacks

cli_attacks.register(app)
runner = CliRunner()


def invoke(*args: str, width: int = 80):
    return runner.invoke(app, ["attack", *args], terminal_width=width)


def test_attack_prints_the_verdict_and_the_cost_in_80_columns(pattern_run, tmp_path) -> None:
    out = tmp_path / "attacked"
    args = ["--attack", "prune", "--ratio", "0", "--run", str(pattern_run), "--out", str(out)]
    result = invoke(*args, "--threshold", "0.3", "--reference-acc", "0.5")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "removed: no (the SoK's rule)" in lines
    assert any("vs threshold 30.0%" in line and "(unmarked 50.0%)" in line for line in lines)
    assert any(line.startswith("cost: ") and line.endswith(" 0 queries") for line in lines)
    assert max(len(line) for line in lines) <= 80
    summary = json.loads((out / "summary.json").read_text())
    assert summary["removed"] is False and summary["threshold"] == 0.3


@pytest.mark.parametrize(
    ("flag", "value"), [("--threshold", "1.5"), ("--reference-acc", "-1"), ("--threshold", "x")]
)
def test_a_bad_rule_value_is_one_line_and_writes_nothing(pattern_run, tmp_path, flag, value):
    out = tmp_path / "never"
    result = invoke("--attack", "prune", "--run", str(pattern_run), "--out", str(out), flag, value)
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and flag in result.output
    assert not out.exists()


def test_list_groups_attacks_by_family_one_line_each() -> None:
    result = invoke("--list", width=200)
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    # the preset chains close the list (tests/wmtui/test_cli_chain.py): attacks come before
    lines = lines[: next((i for i, ln in enumerate(lines) if ln.startswith("CHAINS:")), None)]
    heads = [line.split(":")[0].lower() for line in lines if line[:1].isupper()]
    families = {p.family for p in ATTACKS}
    assert heads == [f for f in FAMILIES if f in families]  # a header per family, in order
    unindented = [line for line in lines if line[:1].islower()]
    assert sorted(line.split()[0] for line in unindented) == sorted(p.name for p in ATTACKS)
    for plugin in ATTACKS:  # each under its own family's header
        where = next(i for i, line in enumerate(lines) if line.split()[:1] == [plugin.name])
        above = [line for line in lines[:where] if line[:1].isupper()][-1]
        assert above.startswith(plugin.family.upper() + ":")


def test_list_json_rows_name_their_family() -> None:
    rows = [json.loads(line) for line in invoke("--list", "--json").stdout.splitlines()]
    rows = [row for row in rows if row["family"] != "chain"]  # the preset chains' rows
    assert {row["name"]: row["family"] for row in rows} == {p.name: p.family for p in ATTACKS}


def test_the_playground_ends_an_attack_phase_with_its_verdict(pattern_run) -> None:
    """The real attack job's events, folded as the playground does: its phase-end line says
    removed or not, with the kept accuracy and the key accuracy against the threshold."""
    from engine.jobs import JobSpec
    from engine.jobs.api import run
    from wmtui.tui.state import DashboardState

    events: list = []
    spec = JobSpec.attack(
        "prune", run=pattern_run, ratio=0.0, threshold=0.3, reference_acc=0.5, device="cpu"
    )
    assert run(spec, on_event=events.append).status == "completed"
    state = DashboardState()
    for event in events:
        state.apply(event)
    lines = state.take_log()
    verdict = next(line for line in lines if line.startswith("removed: "))
    assert verdict.startswith("removed: no · kept acc ") and "vs threshold 30.00%" in verdict
    assert len(verdict) <= 80 and lines[lines.index(verdict) + 1] == "phase prune ended"


async def test_the_attack_picker_lists_families_one_line_each(tmp_path) -> None:
    from textual.widgets import Select

    from tests.wmtui.fakes import FakeSession, training_script
    from wmtui.tui.app import WmtuiApp
    from wmtui.tui.screens.plugin_form import PluginFormScreen

    app_ = WmtuiApp(lambda: FakeSession(training_script()), refresh=4.0, run_path=tmp_path)
    async with app_.run_test(size=(100, 32)) as pilot:
        await pilot.press("a")
        await pilot.pause(0.2)
        form = app_.screen
        assert isinstance(form, PluginFormScreen) and form.chosen == "ft-basic"
        labels = [str(prompt) for prompt, _ in form.query_one(Select)._options]
        families = [label.split()[0] for label in labels]
        order = [f for f in FAMILIES if f in families]
        assert families == sorted(families, key=order.index)  # grouped, in the SoK's order
        assert all("\n" not in label and len(label) <= 70 for label in labels)
        assert {label.split()[1].rstrip(":") for label in labels} == set(form.plugins)


def test_a_ratio_sweep_table_has_a_removed_column(pattern_run, tmp_path) -> None:
    args = ["--attack", "prune", "--run", str(pattern_run), "--out", str(tmp_path / "sweep")]
    result = invoke(*args, "--sweep", "0,0.99", "--threshold", "0.3", "--reference-acc", "0")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("ratio"))
    assert lines[head].split()[5] == "removed"  # after ratio, pruned, sparsity, test acc
    # ratio 0 keeps the key above 30%; 99% of the weights gone: judged too (accuracy cannot
    # fall below an unmarked 0%), removed if the key fell with them
    words = [line.split()[4] for line in lines[head + 1 : head + 3]]
    assert words[0] == "no" and words[1] in ("yes", "no"), words


async def test_the_attack_form_takes_the_thiefs_query_cap_and_answers(tmp_path) -> None:
    from textual.widgets import Input

    from tests.wmtui.fakes import FakeSession, training_script
    from wmtui.tui.app import WmtuiApp
    from wmtui.tui.screens.plugin_form import PluginFormScreen

    app_ = WmtuiApp(lambda: FakeSession(training_script()), refresh=4.0, run_path=tmp_path)
    async with app_.run_test(size=(100, 32)) as pilot:
        await pilot.press("a")
        await pilot.pause(0.2)
        form = app_.screen
        assert isinstance(form, PluginFormScreen)
        chosen: list = []
        form.dismiss = chosen.append  # type: ignore[method-assign]
        form.submit()  # the form's 0: no cap
        assert chosen and chosen[-1][2].queries == 0 and chosen[-1][2].answers == "probs"
        form.query_one("#budget-queries", Input).value = "500"
        form.query_one("#budget-answers", Input).value = "labels"
        form.submit()
        assert (chosen[-1][2].queries, chosen[-1][2].answers) == (500, "labels")
