"""What ``wmtui reproduce`` prints about a result: the table with both verdicts per cell, and
``--check``'s exit code with the cells that fail and why.

Regression decides the exit code (a rerun that moved is a bug until shown otherwise); the
paper's verdict is printed beside it and fails only a cell marked ``must_reproduce``, because
a quick scale on another dataset is not expected to land on the paper's figure.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import typer

from engine.studies.recipe_check import paper_line
from engine.studies.recipe_matrix import CLAIMS_TABLE, Matrix, matrix_table
from engine.studies.recipes import compute_seconds, duration

#: failing cells named one per line; a matrix's hundreds go to recipe.json, not the terminal
SHOWN = 30


def check_code(result: dict[str, Any]) -> int:
    """0 when every checked cell holds and every trial completed; else 1, naming each failing
    cell with the trials at fault."""
    cells = result["cells"]
    checked = [c for c in cells if c.get("ok") is not None]
    failing = [c for c in checked if not c["ok"]]
    missing = [t for t in result["trials"] if t["status"] != "completed"]
    if missing:
        names = ", ".join(t["id"] for t in missing[:3]) + (" ..." if len(missing) > 3 else "")
        typer.echo(f"check: {len(missing)} trial(s) did not complete: {names}", err=True)
    if not checked:
        typer.echo(f"check: no cell has a record or band at scale {result['scale']}", err=True)
        return 1
    for cell in failing[:SHOWN]:
        typer.echo(f"check failed: {cell['name']}: {_why(cell)}", err=True)
    if len(failing) > SHOWN:
        typer.echo(f"check failed: {len(failing) - SHOWN} more (recipe.json has each)", err=True)
    kinds = Counter(_kind(c) for c in checked)
    banded = kinds.get("band", 0)
    if banded:
        typer.echo(
            f"check: {banded} cell(s) checked against a band only (no regression record; "
            "record one with --suggest)",
            err=True,
        )
    if failing or missing:
        typer.echo(f"check failed: {len(failing)} of {len(checked)} cell(s)", err=True)
        return 1
    typer.echo(
        f"check passed: {len(checked)} cells ({kinds.get('regression', 0)} regression, "
        f"{banded} band)",
        err=True,
    )
    return 0


def _kind(cell: dict[str, Any]) -> str:
    return str((cell.get("regression") or {}).get("kind", "band"))


def _why(cell: dict[str, Any]) -> str:
    regression = cell.get("regression") or {}
    if regression.get("ok") is False:
        return str(regression.get("detail", "off"))
    if (cell.get("paper_check") or {}).get("verdict") == "does not reproduce":
        return "does not reproduce the paper (must_reproduce)"
    return "outside its tolerance"


# -- tables -------------------------------------------------------------------------------
def number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}{unit}" if unit else f"{value:.3g}"


def comparison_table(result: dict[str, Any]) -> str:
    """The paper's number beside ours for every cell, with both verdicts (README-ready)."""
    lines = [
        f"{result['recipe']} ({result['scale']}): {result['title']}",
        f"{result['paper']}; {result['source']}",
        "",
        "| cell | table | paper | ours (mean ± sd, n of N) | the paper | regression |",
        "|---|---|---|---|---|---|",
    ]
    for cell in result["cells"]:
        unit = cell["unit"]
        paper = cell["paper_text"] or number(cell["paper"], unit)
        planned = cell.get("planned", cell["n"])
        ours = f"- (0 of {planned})"
        if cell["mean"] is not None:
            spread = f"{number(cell['mean'], unit)} ± {number(cell['std'], unit)}"
            ours = f"{spread} ({cell['n']} of {planned}{interval_text(cell)})"
        verdict = paper_line(cell.get("paper_check") or {}, unit)
        lines.append(
            f"| {cell['name']} | {cell['table']} | {paper} | {ours} | {verdict} "
            f"| {regression_text(cell)} |"
        )
    done = sum(t["status"] == "completed" for t in result["trials"])
    verdicts = Counter(
        (c.get("paper_check") or {}).get("verdict", "no paper value") for c in result["cells"]
    )
    lines += [
        "",
        f"{done}/{len(result['trials'])} trials completed; their phases took "
        f"{duration(compute_seconds(result))} "
        f"(this run {duration(result.get('seconds', 0))})",
        "the paper: " + ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())),
    ]
    return "\n".join(lines)


def interval_text(cell: dict[str, Any]) -> str:
    """``; 95%: 20.8-93.9%`` for a rate of 0/1 outcomes (Wilson), whether or not the paper
    gives a figure: with 3 models, 2 of 3 and 3 of 3 overlap, and the reader should see it."""
    interval = (cell.get("paper_check") or {}).get("interval")
    if not cell.get("outcome") or not interval:
        return ""
    low, high = interval
    return f"; 95%: {number(low, '')}-{number(high, cell['unit'])}"


def regression_text(cell: dict[str, Any]) -> str:
    """``ok (identical)``, ``**fail**: seed=1: ...``, or the band for a cell without a record."""
    regression = cell.get("regression") or {}
    ok, unit = regression.get("ok"), cell["unit"]
    mark = {True: "ok", False: "**fail**", None: "-"}[ok]
    if regression.get("kind") == "band":
        band = f"{number(cell['expect'], unit)} ± {number(cell['tolerance'], unit)}"
        return f"{mark}: band {band}, no regression record" + (
            "" if ok else f" ({regression.get('detail', '')})"
        )
    return f"{mark} ({regression.get('detail', '')})" if regression else mark


def matrix_text(result: dict[str, Any], matrix: Matrix) -> str:
    """The matrix at a glance, one line per column value (an attack) and one column per row
    value (a scheme): ``k/n``, the seeds whose verdict says removed of those judged (the
    colour metric when it is a rate of 0/1 outcomes, else its mean), ``n/a`` where every trial
    finished unjudged, ``·`` still to come; then the claims as measured."""
    table = matrix_table(matrix, result["cells"], result["trials"])
    metric = matrix.metric(matrix.colour)
    rate = metric.metric == "removed"

    def shown(row: str, column: str) -> str:
        value = table.value(row, column, matrix.colour)
        if value is None:
            return "n/a" if table.not_applicable(row, column, matrix.colour) else "·"
        if not rate:
            return number(value, metric.unit)
        n = table.counts.get((row, column), 0)
        return f"{round(value / 100 * n)}/{n}" if metric.unit == "%" else f"{value:.2f}"

    lines = [
        f"| {matrix.columns} \\ {matrix.rows} | " + " | ".join(table.rows) + " |",
        "|---|" + "---|" * len(table.rows),
    ]
    for column in table.columns:
        cells = " | ".join(shown(row, column) for row in table.rows)
        lines.append(f"| {column} | {cells} |")
    claims = [c for c in result["cells"] if c.get("table") == CLAIMS_TABLE]
    for claim in claims:
        mean = claim.get("mean")
        verdict = "waits" if mean is None else ("holds" if mean >= 50 else "does not hold")
        lines.append(f"claim: {claim['name']}: {verdict}")
    return "\n".join(lines)
