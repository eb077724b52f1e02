"""Checking a recipe's result: each cell's number read from the trials it covers, set against
its expected number and the paper's.

Kept apart from running the trials (``recipes``) so that the verdicts can change without
touching how trials run, and so that a check reads nothing but the trials' folders.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.studies.grid import matches, substitute
from engine.studies.recipe_file import UNITS, Cell
from engine.studies.scenario_runner import completed_summary, phase_folder

if TYPE_CHECKING:
    from engine.studies.recipes import RecipeRun, Trial


def compare(run: RecipeRun, statuses: Mapping[str, str]) -> dict[str, Any]:
    recipe = run.recipe
    cells = [cell_result(run, cell, statuses) for cell in recipe.cells]
    checked = [c for c in cells if c["ok"] is not None]
    complete = all(statuses.get(t.key) == "completed" for t in run.trials)
    return {
        "recipe": recipe.name,
        "title": recipe.title,
        "paper": recipe.paper,
        "source": recipe.source,
        "scale": run.scale,
        "complete": complete,
        "passed": complete and bool(checked) and all(c["ok"] for c in checked),
        "cells": cells,
        "trials": [
            {
                "id": t.folder_name,
                "arm": t.arm,
                "params": t.point,
                "run": run.trial_folder(t).relative_to(run.out).as_posix(),
                "status": statuses.get(t.key, "missing"),
            }
            for t in run.trials
        ],
    }


def cell_result(run: RecipeRun, cell: Cell, statuses: Mapping[str, str]) -> dict[str, Any]:
    if cell.measure == "claim":  # a finding over a recipe's whole matrix
        from engine.studies.recipe_matrix import claim_result

        return claim_result(run, cell, statuses)
    values = []
    for trial in run.trials:
        if trial.arm != cell.arm or not matches(trial.point, cell.where):
            continue
        if statuses.get(trial.key) != "completed":
            continue
        value = measure(run, cell, trial)
        if value is not None:
            values.append(value * UNITS[cell.unit])
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
    expect = cell.expect.get(run.scale)
    ok = None
    if expect is not None and mean is not None:
        ok = abs(mean - expect.value) <= expect.tolerance + 1e-9
    elif expect is not None:
        ok = False
    return {
        "name": cell.name,
        "table": cell.table,
        "paper": cell.paper,
        "paper_text": cell.paper_text,
        "mean": mean,
        "std": std,
        "n": len(values),
        "values": values,
        "expect": expect.value if expect else None,
        "tolerance": expect.tolerance if expect else None,
        "reason": expect.reason if expect else "no expected number at this scale",
        "ok": ok,
        "unit": cell.unit,
        #: each trial counts 0 or 1 (flagged, removed or not): under one trial is noise
        "outcome": cell.measure in ("equals", "smallest-is") or cell.metric == "removed",
    }


def measure(run: RecipeRun, cell: Cell, trial: Trial) -> float | None:
    """The cell's number in one trial, or None when that phase has no such number."""
    index = [p.name for p in trial.scenario.phases].index(cell.phase) + 1
    spec = trial.scenario.phases[index - 1]
    folder = run.trial_folder(trial)
    summary = completed_summary(phase_folder(folder, index, spec), spec)
    if summary is None:
        return None
    value = lookup(summary, substitute(cell.metric, trial.point))
    if cell.measure == "equals":
        wanted = substitute(cell.equals, trial.point)
        return float(value is None if wanted == "none" else value == wanted)
    if cell.measure == "smallest-is":
        wanted = substitute(cell.equals, trial.point)
        if not isinstance(value, list) or not value:
            return None
        return float(min(range(len(value)), key=value.__getitem__) == wanted)
    if cell.measure == "ratio-to-others":
        return _ratio_to_others(value, substitute(cell.index, trial.point))
    number = _finite(value)
    if number is None or not cell.base:
        return number
    base = _finite(lookup(summary, substitute(cell.base, trial.point)))
    return None if base is None else number - base


def _finite(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def lookup(summary: Any, path: str) -> Any:
    """``retention.key`` or ``perturbation_sizes.4`` in a summary; None where absent."""
    value = summary
    for part in path.split("."):
        if isinstance(value, Mapping):
            value = value.get(part)
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return None
    return value


def _ratio_to_others(values: Any, index: Any) -> float | None:
    """One class's size over the median of the others' (how far below the rest it sits)."""
    if not isinstance(values, list) or not isinstance(index, int) or not 0 <= index < len(values):
        return None
    others = [v for i, v in enumerate(values) if i != index]
    middle = statistics.median(others) if others else 0.0
    return values[index] / middle if middle else None


def suggest_expectations(result: Mapping[str, Any]) -> list[str]:
    """Lines for a recipe file from a measured result: the mean, and a tolerance of three
    standard errors of that mean (sd/sqrt(n)), at least a percentage point (0.01 without a
    unit) and, where each trial counts 0 or 1, at least one trial's worth."""
    lines = []
    for cell in result["cells"]:
        if cell["mean"] is None:
            continue
        n, sd = cell["n"], cell["std"] or 0.0
        percent = cell["unit"] == "%"
        floor = 1.0 if percent else 0.01
        if cell.get("outcome"):
            floor = max(floor, (100.0 if percent else 1.0) / n)
        tolerance = math.ceil(max(3 * sd / math.sqrt(n), floor) * 1000) / 1000  # never rounded down
        lines.append(
            f"# {cell['name']}: mean {cell['mean']:.4g}, sd {sd:.3g}, n {n}\n"
            f"expect.{result['scale']} = {{ value = {cell['mean']:.4g}, "
            f'tolerance = {tolerance:g}, reason = "3 standard errors of the mean over {n} '
            f'trials (sd {sd:.3g}), at least {floor:.2g}" }}'
        )
    return lines
