"""A recipe's report page, and its comparison table: per cell the paper's figure, ours, and
both verdicts.

A result written before cells had two verdicts (no ``regression`` or ``paper_check`` in its
``recipe.json``) still renders: its expected band and pass/fail show where the regression
verdict would, and the paper column says it was not judged.
"""

from __future__ import annotations

from typing import Any

from engine.reports.collect import RecipeData
from engine.reports.html import (
    RECIPE_SECTIONS,
    badge,
    document,
    empty,
    esc,
    first_trial,
    fmt,
    notes,
    table,
    trials_table,
)
from engine.studies.recipes import compute_seconds, duration


def recipe_page(
    data: RecipeData, svgs: dict[str, str], extra: tuple[str, str, str] | None = None
) -> str:
    """``extra``: a section (id, name, HTML) shown first (a recipe's matrix: the heatmap is
    what a reader opens the page for; the comparison below it has a row per cell, thousands
    for ``sok``)."""
    result = data.result
    meta = (
        f"recipe <b>{esc(result.get('recipe', ''))}</b> · {esc(result.get('paper', ''))}, "
        f"{esc(result.get('source', ''))} · scale {esc(result.get('scale', ''))} · "
        f"{recipe_verdict(data)} · phases took "
        f"{esc(duration(compute_seconds(result)))} of compute · "
        f"<code>{esc(data.path)}</code>"
    )
    sections = list(RECIPE_SECTIONS)
    body = [
        notes(data.notes),
        f"<section id='comparison'><h2>Paper comparison</h2>{comparison_table(data)}</section>",
        f"<section id='trials'><h2>Trials</h2>{trials_table(data)}</section>",
    ]
    if extra is not None:
        sections.insert(0, extra[:2])
        body.insert(1, extra[2])
    if data.first is not None:
        sections.append(("trial", "First trial"))
        body.append(first_trial(data.first, svgs))
    return document(data.title, meta, sections, "".join(body))


def recipe_verdict(data: RecipeData) -> str:
    """pass / fail, or "incomplete" with how many trials completed (an unfinished recipe
    has not failed its paper)."""
    if data.result.get("complete") is not False:
        return badge(data.result.get("passed"))
    done = sum(1 for t in data.trials if t.get("status") == "completed")
    return f"<span class='badge none'>incomplete</span> {done} of {len(data.trials)} trials"


def comparison_table(data: RecipeData) -> str:
    if not data.cells:
        return empty("The recipe result holds no cells.")
    rows = []
    for c in data.cells:
        unit = str(c.get("unit", "") or "")
        paper = c.get("paper_text") or fmt(c.get("paper"))
        measured = "–"
        if c.get("mean") is not None:
            several = isinstance(c.get("n"), int) and c["n"] > 1
            spread = f" ± {fmt(c.get('std'))}" if several else ""
            measured = f"{fmt(c.get('mean'))}{spread}{unit}"
        count = fmt(c.get("n"))
        if c.get("planned") is not None:
            count = f"{count} of {fmt(c['planned'])}"
        rows.append(
            [
                esc(c.get("table", "")),
                esc(c.get("name", "")),
                esc(paper),
                esc(measured) + values_note(c.get("values"), unit),
                esc(count),
                paper_verdict(c.get("paper_check"), unit),
                badge(c.get("ok")) + " " + esc(regression(c, unit)),
                esc(c.get("reason", "")),
            ]
        )
    headers = ["table", "cell", "paper", "measured (mean ± sd)", "n", "the paper", "regression"]
    return table([*headers, "why this expectation"], rows, {3, 4})


def paper_verdict(check: Any, unit: str) -> str:
    """The verdict, the 95% interval and what it was held against."""
    if not isinstance(check, dict):
        return esc("not judged (an older result)")
    verdict = esc(check.get("verdict", ""))
    interval = check.get("interval")
    if isinstance(interval, list) and len(interval) == 2:
        low, high = interval
        against = check.get("against", "")
        verdict += f"<br><small>95% {esc(fmt(low))}–{esc(fmt(high))}{esc(unit)}"
        verdict += f" vs {esc(against)}</small>" if against else "</small>"
    elif check.get("why"):
        verdict += f"<br><small>{esc(check['why'])}</small>"
    return verdict


def regression(cell: dict[str, Any], unit: str) -> str:
    """``identical``, the trials at fault, or an older result's expected band."""
    found = cell.get("regression")
    if isinstance(found, dict):
        return str(found.get("detail", ""))
    if cell.get("expect") is None:
        return ""
    return f"band {fmt(cell.get('expect'))} ± {fmt(cell.get('tolerance'))}{unit}"


def values_note(values: Any, unit: str) -> str:
    """Each trial's number under the mean, when there are a few."""
    if not isinstance(values, list) or not 1 < len(values) <= 12:
        return ""
    shown = ", ".join(fmt(v) for v in values)
    return f"<br><small>{esc(shown)}{esc(unit)}</small>"
