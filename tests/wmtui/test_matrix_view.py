"""The matrix view: cells filling as ``recipe.json`` changes, colours by removed-rate, 80x24
with scrolling, Enter to a cell's trials and a phase to replay; in a real terminal (tmux);
and ``wmtui serve --recipe``."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, Static

from engine.studies.recipe_matrix import Matrix, MatrixMetric
from tests.engine.test_recipe_matrix import run_tiny_matrix
from tests.wmtui.test_tmux import Terminal, ensure_tmux, wmtui_command
from wmtui.tui.matrix_app import Choice, MatrixApp
from wmtui.tui.matrix_state import SHADES, shade
from wmtui.tui.screens.matrix_trials import MatrixTrials

MATRIX = Matrix(
    "scheme",
    "attack",
    "attack",
    "removed-rate",
    [MatrixMetric("removed-rate", "removed", unit="%"), MatrixMetric("cost", "cost.seconds")],
    [],
)
ROWS = ["pattern", "abstract", "dual"]
COLUMNS = [f"attack-{i:02d}" for i in range(30)]  # wider than 80 columns: it scrolls


def fake_result(values: dict[tuple[str, str], float | None]) -> dict[str, Any]:
    """A ``recipe.json`` holding the matrix's cells (as compare writes them) and no trial."""
    cells = []
    for row in ROWS:
        for column in COLUMNS:
            for metric in MATRIX.metrics:
                value = values.get((row, column)) if metric.name == "removed-rate" else 1.5
                cells.append(
                    {
                        "name": Matrix.cell_name(row, column, metric.name),
                        "table": "matrix",
                        "mean": value,
                        "n": 0 if value is None else 3,
                    }
                )
    return {"cells": cells, "trials": []}


def texts(app: MatrixApp) -> list[list[str]]:
    grid = app.query_one(DataTable)
    return [[str(v) for v in grid.get_row_at(i)] for i in range(grid.row_count)]


@pytest.fixture(scope="module")
def matrix_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    folder = tmp_path_factory.mktemp("matrix-view")
    recipe, _run, _result = run_tiny_matrix(folder)
    return folder, recipe


async def test_cells_fill_as_the_result_changes_and_scroll_at_80x24(tmp_path: Path) -> None:
    (tmp_path / "recipe.json").write_text(json.dumps(fake_result({})))
    app = MatrixApp(tmp_path, MATRIX, "fake")
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        rows = texts(app)
        assert [r[0] for r in rows] == ROWS and len(rows[0]) == 1 + len(COLUMNS)
        assert all(cell.strip() == "·" for row in rows for cell in row[1:])  # nothing yet
        title = str(app.query_one("#matrix-title", Static).render())
        assert "0/90 cells" in title
        filled = {("pattern", "attack-00"): 100.0, ("dual", "attack-29"): 33.33}
        (tmp_path / "recipe.json").write_text(json.dumps(fake_result(filled)))
        app.reload()
        await pilot.pause()
        rows = texts(app)
        assert rows[0][1].strip() == "100" and rows[2][30].strip() == "33"
        grid = app.query_one(DataTable)
        assert (
            str(grid.get_row_at(0)[1].style).endswith(f"on {SHADES[-1]}")
            and shade(1.0) == SHADES[-1]
        )
        assert str(grid.get_row_at(1)[1].style).endswith(f"on {shade(None)}")  # not measured
        assert "2/90 cells" in str(app.query_one("#matrix-title", Static).render())
        # the last column lies beyond 80 columns: moving there scrolls, the line names it
        for _ in range(len(COLUMNS)):
            await pilot.press("right")
        await pilot.press("down", "down")
        await pilot.pause()
        assert grid.scroll_x > 0
        line = str(app.query_one("#matrix-cell", Static).render())
        assert line.startswith("dual × attack-29: removed-rate 33.3%")
        assert app.size == (80, 24)


async def test_before_any_result_the_planned_layout_shows_with_nothing_measured(
    tmp_path: Path,
) -> None:
    """A run that has written no recipe.json yet (or a watcher started first) shows every
    planned row and column, empty, and fills from the first result it reads."""
    planned = [{"name": c["name"], "table": c["table"]} for c in fake_result({})["cells"]]
    app = MatrixApp(tmp_path, MATRIX, "fake", planned=planned)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        rows = texts(app)
        assert [r[0] for r in rows] == ROWS and len(rows[0]) == 1 + len(COLUMNS)
        assert all(cell.strip() == "·" for row in rows for cell in row[1:])
        assert "no result yet" in str(app.query_one("#matrix-title", Static).render())
        (tmp_path / "recipe.json").write_text(json.dumps(fake_result({("dual", "attack-01"): 0})))
        app.reload()
        await pilot.pause()
        assert texts(app)[2][2].strip() == "0"


async def test_enter_opens_the_cells_trials_and_a_phase_to_replay(matrix_run: tuple) -> None:
    folder, recipe = matrix_run
    app = MatrixApp(folder / "out", recipe.matrix, recipe.title)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        rows = texts(app)
        assert [r[0] for r in rows] == ["pattern", "abstract"]
        assert all(cell.strip() in ("0", "100") for row in rows for cell in row[1:])
        await pilot.press("enter")  # on pattern × jpeg-10
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, MatrixTrials)
        assert screen.heading == "pattern × jpeg-10"
        assert [r.phase for r in screen.rows] == ["embed", "attack"]
        assert all(r.recorded and r.status in ("completed", "kept") for r in screen.rows)
        await pilot.press("down", "enter")
        await pilot.pause()
    assert isinstance(app.return_value, Choice)
    assert app.return_value.folder == screen.rows[1].folder and not app.return_value.live


def test_the_matrix_in_a_real_terminal_at_80x24(matrix_run: tuple, tmp_path: Path) -> None:
    """``wmtui reproduce FILE --no-run --tui``: the finished matrix, a cell's trials, quit."""
    tmux = ensure_tmux()
    folder, _recipe = matrix_run
    command = [
        *("env", "-u", "COLUMNS", "-u", "LINES", "OMP_NUM_THREADS=1"),
        *wmtui_command(),
        *("reproduce", str(folder / "tiny.toml"), "--no-run", "--tui"),
        *("--out", str(folder / "out")),
    ]
    term = Terminal(tmux, tmp_path, (80, 24), command)
    try:
        shown = term.wait_for("the matrix", lambda p: "4/4 cells" in p, timeout=60)
        assert "pattern" in shown and "abstract" in shown and "jpeg" in shown
        assert "pattern × jpeg-10: removed-rate" in shown
        term.send("Enter")
        trials = term.wait_for("the cell's trials", lambda p: "1 trial(s)" in p, timeout=10)
        assert "embed" in trials and "attack" in trials
        term.send("Escape")
        term.wait_for("the matrix again", lambda p: "4/4 cells" in p, timeout=10)
        term.send("q")
        asked = time.monotonic()
        while term.exit_code() is None and time.monotonic() - asked < 10.0:
            time.sleep(0.05)
        assert term.exit_code() == 0, term.dump()
    finally:
        term.close()


def test_serve_runs_the_matrix_view_in_each_tab(
    matrix_run: tuple, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wmtui.cli import replay as cli_replay

    folder, _ = matrix_run
    args = cli_replay.served_args(None, None, ["--out", "X"], str(folder / "tiny.toml"))
    assert args == ["reproduce", str(folder / "tiny.toml"), "--no-run", "--tui", "--out", "X"]
    server = cli_replay.prepare_server("127.0.0.1", 8123, args, None)
    words = shlex.split(server.command)
    assert words[-6:] == args


def test_serve_refuses_a_recipe_without_a_matrix() -> None:
    from typer.testing import CliRunner

    from wmtui.cli import app

    result = CliRunner().invoke(app, ["serve", "--recipe", "refit"])
    assert result.exit_code == 2
    assert "no [matrix] table" in result.output and "Traceback" not in result.output


def test_reproduce_prints_the_matrix_one_attack_a_line_after_its_table(matrix_run) -> None:
    """``wmtui reproduce NAME --no-run`` on a matrix recipe ends with the matrix at a glance:
    one line per attack, ``k/n`` removed of the seeds judged, then the claims."""
    from typer.testing import CliRunner

    from engine.studies.recipes import load_result
    from wmtui.cli import app

    folder, _recipe = matrix_run
    out = folder / "out"
    result = CliRunner().invoke(
        app, ["reproduce", str(folder / "tiny.toml"), "--no-run", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    text = result.stdout[result.stdout.index("| attack \\ scheme |") :].splitlines()
    assert text[0] == "| attack \\ scheme | pattern | abstract |"
    measured = load_result(out)
    assert measured is not None
    for line, column in zip(text[2:4], ["jpeg-10", "wq"], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == column
        for scheme, shown in zip(["pattern", "abstract"], cells[1:], strict=True):
            name = f"{scheme} × {column}: removed-rate"
            cell = next(c for c in measured["cells"] if c["name"] == name)
            assert shown == f"{round(cell['mean'] / 100 * cell['n'])}/{cell['n']}"
    assert text[4] == "claim: no scheme survives: " + (
        "holds" if measured["cells"][-1]["mean"] == 100 else "does not hold"
    )


def test_the_printed_matrix_says_n_a_for_a_cell_finished_unjudged_and_a_dot_for_one_to_come():
    from wmtui.cli.reproduce_check import matrix_text

    def cell(column: str, mean: float | None) -> dict[str, Any]:
        name = Matrix.cell_name("dawn", column, "removed-rate")
        return {"name": name, "table": "matrix", "mean": mean, "n": 0 if mean is None else 3}

    trials = [
        {"params": {"scheme": "dawn", "attack": column}, "status": status}
        for column, status in (
            ("jpeg", "completed"),
            ("retraining", "completed"),
            ("ft", "running"),
        )
    ]
    cells = [cell("jpeg", None), cell("retraining", 200 / 3), cell("ft", None)]
    lines = matrix_text({"cells": cells, "trials": trials}, MATRIX).splitlines()
    assert lines[2:] == ["| jpeg | n/a |", "| retraining | 2/3 |", "| ft | · |"]
