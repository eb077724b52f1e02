"""A sweep's report page: mean ± sd per configuration, every trial's row, the grid, and the
first completed trial in full (as a recipe's page shows its first trial).

Built from :mod:`engine.reports.html`'s pieces (tables, escaping, the document), so it keeps
that page's rules: self-contained, and no ``http://`` or ``https://`` anywhere.
"""

from __future__ import annotations

from typing import Any

from engine.reports.collect import SweepData
from engine.reports.html import (
    document,
    empty,
    esc,
    figure,
    first_trial,
    fmt,
    notes,
    rate,
    table,
)
from engine.studies.sweep_results import RESULTS_CSV, RESULTS_JSONL

CONFIGS_FIGURE = "configs"
SWEEP_SECTIONS = (("configs", "Configurations"), ("trials", "Trials"), ("grid", "Grid"))
#: a wide table scrolls sideways instead of widening the page
WIDE = "<div style='overflow-x: auto'>{}</div>"


def sweep_page(data: SweepData, svgs: dict[str, str]) -> str:
    counts = data.counts
    seconds = counts.get("seconds")
    meta = (
        f"sweep <b>{esc(data.name)}</b> · grid <code>{esc(data.source or '–')}</code> · "
        f"{progress(data)}"
        + (f" · took {esc(fmt(seconds))} s" if isinstance(seconds, int | float) else "")
        + f" · <code>{esc(data.path)}</code>"
    )
    sections = list(SWEEP_SECTIONS)
    body = [
        notes(data.notes),
        f"<section id='configs'><h2>Configurations</h2>{configs_block(data, svgs)}</section>",
        f"<section id='trials'><h2>Trials</h2>{trials_block(data)}</section>",
        f"<section id='grid'><h2>Grid</h2>{grid_block(data)}</section>",
    ]
    if data.first is not None:
        sections.append(("trial", "First trial"))
        body.append(first_trial(data.first, svgs))
    return document(data.title, meta, sections, "".join(body))


def progress(data: SweepData) -> str:
    """ "3 of 4 trials completed, 1 failed" after a badge: complete, failed trials (none
    left to run), or incomplete."""
    counts = data.counts
    done, total, failed = counts.get("completed"), counts.get("trials"), counts.get("failed")
    if counts.get("complete") or (total and done == total):
        state = "pass'>complete"
    elif failed and not counts.get("remaining"):
        state = "fail'>failed trials"
    else:
        state = "none'>incomplete"
    return (
        f"<span class='badge {state}</span> {esc(fmt(done))} of {esc(fmt(total))} trials "
        f"completed, {esc(fmt(failed))} failed"
    )


# -- numbers -----------------------------------------------------------------------------------
def is_rate(metric: str) -> bool:
    """Accuracies and retentions are rates (shown in %); anything else as a number."""
    return "test_acc" in metric or "retention" in metric


def value(metric: str, number: Any) -> str:
    if is_rate(metric) and isinstance(number, int | float) and not isinstance(number, bool):
        return rate(number)
    return esc(fmt(number))


def mean_sd(metric: str, stats: Any) -> str:
    """ "89.06% ± 1.02%" over the seeds; a categorical metric's values; "–" when none."""
    if not isinstance(stats, dict):
        return "–"
    if "values" in stats:
        values = stats["values"] if isinstance(stats["values"], list) else []
        return esc(", ".join(fmt(v) for v in values)) or "–"
    mean, std = stats.get("mean"), stats.get("std")
    if not isinstance(mean, int | float):
        return "–"
    several = isinstance(stats.get("n"), int) and stats["n"] > 1
    spread = f" ± {value(metric, std)}" if several and isinstance(std, int | float) else ""
    return f"{value(metric, mean)}{spread}"


# -- sections ----------------------------------------------------------------------------------
def configs_block(data: SweepData, svgs: dict[str, str]) -> str:
    if not data.configs:
        return empty("The sweep's summary holds no configurations.")
    over = ", ".join(data.seed_axes)
    intro = (
        f"<p>Mean ± sd over {esc(over)} per configuration; n: the trials that completed.</p>"
        if over
        else "<p>No seed axis: each configuration is one trial (n: 1 when it completed).</p>"
    )
    caption = (
        "the last phase's test accuracy and retention per configuration: "
        "the bar is the mean, the whisker ± one standard deviation"
    )
    headers = [*data.group_by, "n", *data.metrics]
    rows = [
        [
            *(esc(fmt((c.get("point") or {}).get(a))) for a in data.group_by),
            esc(fmt(c.get("n"))),
            *(mean_sd(m, (c.get("metrics") or {}).get(m)) for m in data.metrics),
        ]
        for c in data.configs
    ]
    numeric = set(range(len(data.group_by), len(headers)))
    return (
        intro + figure(svgs, CONFIGS_FIGURE, caption) + WIDE.format(table(headers, rows, numeric))
    )


def trials_block(data: SweepData) -> str:
    if not data.rows:
        return empty(f"{RESULTS_JSONL} lists no trials.")
    headers = ["trial", *data.axes, "status", "seconds", *data.metrics, "folder", "error"]
    rows = []
    for row in data.rows:
        point, metrics = row.get("point") or {}, row.get("metrics") or {}
        rows.append(
            [
                f"<code>{esc(row.get('trial', ''))}</code>",
                *(esc(fmt(point.get(a))) for a in data.axes),
                esc(row.get("status", "")),
                esc(fmt(row.get("seconds"))),
                *(value(m, metrics.get(m)) for m in data.metrics),
                f"<code>{esc(row.get('run', ''))}</code>",
                esc(row.get("error", "") or ""),
            ]
        )
    start = 1 + len(data.axes) + 1
    numeric = set(range(start, start + 1 + len(data.metrics)))
    note = (
        f"<p>One row per trial, as <code>{RESULTS_JSONL}</code> and <code>{RESULTS_CSV}</code> "
        "beside the sweep hold them; each folder is an ordinary scenario run.</p>"
    )
    return note + WIDE.format(table(headers, rows, numeric))


def grid_block(data: SweepData) -> str:
    """Each axis with the values its trials took, and the base training configuration."""
    values: dict[str, list[str]] = {a: [] for a in data.axes}
    for row in data.rows:
        for axis in data.axes:
            shown = fmt((row.get("point") or {}).get(axis))
            if shown not in values[axis]:
                values[axis].append(shown)
    role = {a: "averaged over (seed)" for a in data.seed_axes}
    axes = table(
        ["axis", "values", "role"],
        [
            [f"<code>{esc(a)}</code>", esc(", ".join(v)), esc(role.get(a, "configuration"))]
            for a, v in values.items()
        ],
    )
    source = f"<p>Grid file: <code>{esc(data.source)}</code></p>" if data.source else ""
    config = ""
    if data.config:
        rows = [[f"<code>{esc(k)}</code>", esc(fmt(v))] for k, v in data.config.items()]
        config = "<h3>Training (before the axes)</h3>" + table(["setting", "value"], rows)
    versions = ""
    if data.versions:
        rows = [[esc(k), esc(v)] for k, v in data.versions.items()]
        versions = "<h3>Versions</h3>" + table(["package", "version"], rows)
    return source + (axes if data.axes else empty("No axes recorded.")) + config + versions
