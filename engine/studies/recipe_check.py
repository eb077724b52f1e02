"""Checking a recipe's result: each cell's number read from the trials it covers, and two
verdicts on it that answer different questions.

*Regression* asks whether this code still computes what it computed: the same seeds must give
the same numbers, trial by trial, within a tolerance set by run-to-run noise (none on one
machine; a small documented one across machines), never by the spread between seeds, which
would let a broken attack pass. Every trial a cell plans must have a value: a cell fed by 2 of
its 3 trials fails, whatever its mean. A cell with only an older ``expect`` band is still
checked against it, but says so: that band is no regression check.

*The paper* asks whether we reproduce the published result: a 95% interval around our mean
(Wilson for 0/1 outcomes, Student's t otherwise) against the paper's value or one-sided claim,
with a margin saying how far off still counts as the same result. It is reported, and fails
``--check`` only on a cell marked ``must_reproduce``.

Kept apart from running the trials (``recipes``) so that a check reads nothing but the trials'
folders and can be re-run without running anything.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from engine.studies.grid import point_label, substitute
from engine.studies.intervals import interval95
from engine.studies.recipe_file import NOT_JUDGED, UNITS, Cell, Recipe
from engine.studies.scenario_runner import completed_summary, phase_folder
from engine.studies.scenarios import Scenario


class Trial(Protocol):
    """What a check reads of a trial (``recipes.Trial``): named here, not imported, because
    the module that runs trials imports this one."""

    @property
    def arm(self) -> str: ...
    @property
    def point(self) -> dict[str, Any]: ...
    @property
    def scenario(self) -> Scenario: ...
    @property
    def key(self) -> str: ...
    @property
    def folder_name(self) -> str: ...


class RecipeRun(Protocol):
    """What a check reads of a planned run (``recipes.RecipeRun``)."""

    @property
    def recipe(self) -> Recipe: ...
    @property
    def scale(self) -> str: ...
    @property
    def out(self) -> Path: ...
    @property
    def trials(self) -> Sequence[Trial]: ...
    def trial_folder(self, trial: Any) -> Path: ...


#: the paper verdicts
REPRODUCES, DIFFERS, INCONCLUSIVE, NO_PAPER = (
    "reproduces",
    "does not reproduce",
    "inconclusive",
    "no paper value",
)
#: how far from the paper's figure still counts as the same result, as a fraction of the unit
#: (10 percentage points; 0.1 for a ratio or a fraction): quick scales run another dataset
DEFAULT_MARGIN = 0.1
#: the regression tolerance ``--suggest`` records, as a fraction of the unit (1 point): reruns
#: with one thread count were identical to the last bit; another thread count moved 2 of 6
#: embeddings' accuracy by up to 0.5 points, doubled for a margin; a fine-tune that took another
#: path is not covered, and fails (docs/reproducing.md, "Checking a rerun")
DEFAULT_TOLERANCE = 0.01


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


def planned_trials(run: RecipeRun, cell: Cell) -> list[Trial]:
    """The trials a cell averages over: its arm's grid points that match its ``where`` (and
    run its phase: a scale may leave a phase out). Looked up in an index of the run's trials
    by the ``where`` axes, built once per run: a matrix's 1,400 cells each scanning 1,400
    trials took 3.7 s a comparison."""
    keys = tuple(sorted(cell.where))
    wanted = (cell.arm, tuple(_hashable(cell.where[k]) for k in keys))
    found = _groups(run.trials, keys).get(wanted, [])
    return [t for t in found if cell.phase in [p.name for p in t.scenario.phases]]


#: the last run's trials and, per tuple of axes, its trials grouped by (arm, values); one
#: tuple, replaced whole, so a comparison in another thread never reads another run's groups
_INDEX: tuple[Any, dict[tuple[str, ...], dict[Any, list[Any]]]] = (None, {})


def _groups(trials: Sequence[Trial], keys: tuple[str, ...]) -> dict[Any, list[Trial]]:
    global _INDEX
    index = _INDEX
    if index[0] is not trials:  # the same list object: a run's trials never change
        index = (trials, {})
        _INDEX = index
    groups = index[1].get(keys)
    if groups is None:
        groups = {}
        for trial in trials:
            if all(k in trial.point for k in keys):
                group = (trial.arm, tuple(_hashable(trial.point[k]) for k in keys))
                groups.setdefault(group, []).append(trial)
        index[1][keys] = groups
    return groups


def _hashable(value: Any) -> Any:
    """An axis value as a dict key that is equal where the values are (1 and 1.0 too): an
    axis of tables varies several settings together."""
    if isinstance(value, Mapping):
        return ("table", tuple(sorted((str(k), _hashable(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("list", tuple(_hashable(v) for v in value))
    return value


def cell_result(run: RecipeRun, cell: Cell, statuses: Mapping[str, str]) -> dict[str, Any]:
    by_trial: dict[str, float | None] = {}
    unjudged: set[str] = set()  # finished without a value: the referee declined to judge
    for trial in planned_trials(run, cell):
        finished = statuses.get(trial.key) == "completed"
        value = measure(run, cell, trial) if finished else None
        label = point_label(trial.point)
        by_trial[label] = None if value is None else value * UNITS[cell.unit]
        if finished and value is None:
            unjudged.add(label)
    if cell.measure == "matrix-claim":  # a finding over the recipe's whole matrix
        from engine.studies.recipe_matrix import claim_values

        by_trial = claim_values(run, cell, statuses, cell_result)
    values = [v for v in by_trial.values() if v is not None]
    mean = statistics.fmean(values) if values else None
    std = statistics.stdev(values) if len(values) > 1 else (0.0 if values else None)
    expect = cell.expect.get(run.scale)
    #: each trial counts 0 or 1 (flagged, removed or not): under one trial is noise
    outcome = cell.measure in ("equals", "smallest-is") or cell.metric == "removed"
    regression = regression_verdict(cell, run.scale, by_trial, mean, unjudged)
    paper = paper_verdict(cell, values, outcome)
    ok = regression["ok"]
    if cell.must_reproduce and paper["verdict"] == DIFFERS:
        ok = False
    return {
        "name": cell.name,
        "table": cell.table,
        "paper": cell.paper,
        "paper_text": cell.paper_text,
        "mean": mean,
        "std": std,
        "n": len(values),
        "planned": len(by_trial),
        "values": values,
        "trial_values": by_trial,
        "unjudged": sorted(unjudged),
        "expect": expect.value if expect else None,
        "tolerance": expect.tolerance if expect else None,
        "reason": expect.reason if expect else "no expected number at this scale",
        "ok": ok,
        "unit": cell.unit,
        "record": cell.record,
        "outcome": outcome,
        "regression": regression,
        "paper_check": paper,
    }


def regression_verdict(
    cell: Cell,
    scale: str,
    by_trial: Mapping[str, float | None],
    mean: float | None,
    unjudged: set[str] | frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """``ok`` True/False (None: nothing to hold the cell to), the ``kind`` of check
    (``regression``, ``band`` or ``none``) and, when it fails, one line per trial at fault.

    A trial in ``unjudged`` finished without a value; it passes only where the record says
    so (``"n/a"``), since a metric that went missing must not pass as one never judged."""
    record = cell.regression.get(scale)
    excused = {
        label
        for label in unjudged
        if record is not None and label in record.values and record.values[label] is None
    }
    planned = len(by_trial)
    have = sum(v is not None or label in excused for label, v in by_trial.items())
    problems = [
        f"{label}: {'not judged' if label in unjudged else 'no value'}"
        for label, v in by_trial.items()
        if v is None and label not in excused
    ]
    if have < planned:
        problems.insert(0, f"{have} of {planned} trials have a value")
    if record is not None:
        largest = 0.0
        for label, value in by_trial.items():
            if value is None:
                continue
            if label not in record.values:
                problems.append(f"{label}: no recorded value (run --suggest)")
                continue
            recorded = record.values[label]
            if recorded is None:
                problems.append(f"{label}: {value:.6g}, recorded {NOT_JUDGED}")
                continue
            difference = abs(value - recorded)
            largest = max(largest, difference)
            if difference > record.tolerance + 1e-9 * max(1.0, abs(value)):  # float slack
                problems.append(
                    f"{label}: {value:.6g}, recorded {recorded:.6g} (± {record.tolerance:g})"
                )
        for label in sorted(record.values.keys() - by_trial.keys()):  # else a vacuous pass
            problems.append(f"{label}: recorded but not planned (the grid changed? record again)")
        how = "identical" if largest == 0 else f"within ± {record.tolerance:g} (max {largest:.3g})"
        return _verdict("regression", problems, how, tolerance=record.tolerance)
    expect = cell.expect.get(scale)
    if expect is not None:
        if mean is not None and abs(mean - expect.value) > expect.tolerance + 1e-9:
            problems.append(f"mean {mean:.4g} outside {expect.value:g} ± {expect.tolerance:g}")
        elif mean is None and not problems:
            problems.append("no value")
        return _verdict("band", problems, "band (no regression record)")
    if problems and planned:  # nothing recorded, but a missing trial still fails its cells
        return _verdict("none", problems, "")
    return {"ok": None, "kind": "none", "detail": "nothing recorded at this scale", "problems": []}


def _verdict(kind: str, problems: list[str], how: str, **extra: Any) -> dict[str, Any]:
    detail = "; ".join(problems[:3]) + (f"; {len(problems) - 3} more" if len(problems) > 3 else "")
    found = {"ok": not problems, "kind": kind, "detail": detail or how, "problems": problems}
    return found | extra


def paper_verdict(cell: Cell, values: list[float], outcome: bool) -> dict[str, Any]:
    """Reproduces when our 95% interval lies within ``margin`` of the paper's value (or on the
    claim's side of it); does not when it lies wholly beyond that margin; inconclusive when it
    straddles the margin's edge or there are too few values for an interval."""
    scale = UNITS[cell.unit]
    margin = cell.margin if cell.margin is not None else DEFAULT_MARGIN * scale
    interval = interval95(values, outcome, scale)
    found: dict[str, Any] = {
        "interval": list(interval) if interval else None,
        "method": "wilson" if outcome else "t",
        "margin": margin,
    }
    if cell.claim:
        side, bound = next(iter(cell.claim.items()))
        found["against"] = f"{side.replace('_', ' ')} {bound:g}"
    elif cell.paper is not None:
        side, bound = "equal", cell.paper
        found["against"] = f"{bound:g} ± {margin:g}"
    else:
        return found | {"verdict": NO_PAPER}
    if interval is None:
        why = "no value" if not values else "one value has no interval"
        return found | {"verdict": INCONCLUSIVE, "why": why}
    low, high = interval
    inside, beyond = {
        "equal": (bound - margin <= low and high <= bound + margin,
                  high < bound - margin or low > bound + margin),
        "at_least": (low >= bound - margin, high < bound - margin),
        "at_most": (high <= bound + margin, low > bound + margin),
    }[side]  # fmt: skip
    verdict = REPRODUCES if inside else DIFFERS if beyond else INCONCLUSIVE
    return found | {"verdict": verdict}


def measure(run: RecipeRun, cell: Cell, trial: Trial) -> float | None:
    """The cell's number in one trial, or None when that phase has no such number (or the
    scale leaves the phase out)."""
    names = [p.name for p in trial.scenario.phases]
    if cell.phase not in names:
        return None
    index = names.index(cell.phase) + 1
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
    """The lines ``--suggest`` prints: the ``[regression.<scale>]`` table, per cell a comment
    with the paper verdict and, where every trial has a value, its record."""
    lines = [f"[regression.{result['scale']}]"]
    return lines + [
        text for _, comment, line in suggestions(result) for text in (comment, line) if text
    ]


def suggestions(result: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    """Per cell: its name, a comment, and a line recording each trial's value (full precision:
    the same seeds on the same machine give the same bits) with the default cross-machine
    tolerance; no line for a cell missing a trial's value, since a partial record would
    excuse that trial forever."""
    found = []
    for cell in result["cells"]:
        by_trial = cell.get("trial_values") or {}
        paper = cell.get("paper_check") or {}
        comment = f"# {cell['name']}: the paper: {paper_line(paper, cell['unit'])}"
        if not cell.get("record", True):
            found.append((cell["name"], comment + "; not recorded: not repeatable", None))
            continue
        unjudged = set(cell.get("unjudged") or ())
        missing = [k for k, v in by_trial.items() if v is None and k not in unjudged]
        if not by_trial or missing:
            have = len(by_trial) - len(missing)
            comment += f"; not recorded: {have} of {len(by_trial)} trials have a value"
            found.append((cell["name"], comment, None))
            continue
        tolerance = DEFAULT_TOLERANCE * UNITS[cell["unit"]]
        values = ", ".join(
            f"{_toml(k)} = {_toml(NOT_JUDGED) if v is None else repr(float(v))}"
            for k, v in by_trial.items()
        )
        line = (
            f"{_toml(cell['name'])} = {{ tolerance = {tolerance:g}, values = {{ {values} }}, "
            f'reason = "same seeds; run-to-run noise across machines" }}'
        )
        found.append((cell["name"], comment, line))
    return found


def _toml(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; names stay readable)."""
    return json.dumps(text, ensure_ascii=False)


def paper_line(paper: Mapping[str, Any], unit: str) -> str:
    """``inconclusive (95% interval 43.8 to 100% vs 100 ± 10)``: the verdict and its grounds."""
    verdict = str(paper.get("verdict", NO_PAPER))
    if verdict == NO_PAPER:
        return verdict
    interval = paper.get("interval")
    if not interval:
        return f"{verdict} ({paper.get('why', 'no interval')})"
    low, high = interval
    return f"{verdict} (95% interval {low:.3g} to {high:.3g}{unit} vs {paper.get('against', '')})"
