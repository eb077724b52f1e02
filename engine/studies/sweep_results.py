"""A sweep's results: one row per trial, and mean ± std over seeds per configuration.

Rows are rebuilt from what the trials' folders say (a trial completed in an earlier run is
read, not remembered), so ``results.csv``, ``results.jsonl`` and ``summary.json`` after a
resumed sweep are those of an uninterrupted one. They are rewritten atomically after every
trial: a sweep killed at any moment leaves complete files.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.runs import atomic_write_bytes, atomic_write_json
from engine.studies.grid import point_label
from engine.studies.scenario_runner import HEADLINE, trial_summary
from engine.studies.sweeps import TRIALS, SweepPlan, SweepTrial

RESULTS_CSV = "results.csv"
RESULTS_JSONL = "results.jsonl"
SUMMARY = "summary.json"
#: metrics shown as values, not averaged (a class index has no mean)
CATEGORICAL = ("flagged_class",)
Row = dict[str, Any]


def headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """``{"embed.test_acc": 0.97, "ftb.retention.key": 0.12, ...}`` from a trial's summary:
    each phase's headline numbers (what the scenario summary keeps of it; tables flattened
    one level, lists such as a scan's per-class sizes left to the trial's folder)."""
    metrics: dict[str, Any] = {}
    for phase in summary.get("phases") or []:
        if not isinstance(phase, Mapping) or phase.get("status") not in ("completed", None):
            continue
        for name in HEADLINE:
            if name not in phase:
                continue
            value = phase[name]
            if isinstance(value, list):
                continue
            if isinstance(value, Mapping):
                metrics |= {f"{phase['name']}.{name}.{k}": v for k, v in value.items()}
            else:
                metrics[f"{phase['name']}.{name}"] = value
    return metrics


def trial_row(
    trial: SweepTrial,
    status: str,
    summary: Mapping[str, Any] | None = None,
    error: str = "",
    seconds: float | None = None,
) -> Row:
    """A results row: the trial's key, axis values, status, time, headline metrics."""
    if seconds is None and summary is not None:
        seconds = summary.get("seconds")
    return {
        "trial": trial.key,
        "point": dict(trial.point),
        "status": status,
        "seconds": seconds,
        "metrics": headline(summary) if summary else {},
        "error": error,
        "run": f"{TRIALS}/{trial.key}",
    }


def completed_row(plan: SweepPlan, trial: SweepTrial) -> Row | None:
    """The row of a trial whose folder an earlier run completed, else None."""
    summary = trial_summary(plan.folder(trial), trial.scenario)
    return trial_row(trial, "completed", summary) if summary is not None else None


class SweepResults:
    """The rows of every planned trial and the files made from them."""

    def __init__(self, plan: SweepPlan) -> None:
        self.plan = plan
        self.rows: dict[str, Row] = {t.key: trial_row(t, "pending") for t in plan.trials}

    def read_folders(self) -> list[SweepTrial]:
        """Mark the trials an earlier run completed; returns them (they are not run again)."""
        kept = []
        for trial in self.plan.trials:
            row = completed_row(self.plan, trial)
            if row is not None:
                self.rows[trial.key] = row
                kept.append(trial)
        return kept

    def update(self, row: Row) -> None:
        self.rows[row["trial"]] = row

    def count(self, status: str) -> int:
        return sum(r["status"] == status for r in self.rows.values())

    def write(self, seconds: float = 0.0) -> dict[str, Any]:
        """Write results.csv, results.jsonl and summary.json; returns the summary."""
        rows = [self.rows[t.key] for t in self.plan.trials]
        out = self.plan.out
        lines = "".join(json.dumps(_finite(r), sort_keys=False) + "\n" for r in rows)
        atomic_write_bytes(out / RESULTS_JSONL, lines.encode())
        atomic_write_bytes(out / RESULTS_CSV, results_csv(self.plan, rows).encode())
        summary = aggregate(self.plan, rows)
        summary["seconds"] = round(seconds, 1)
        atomic_write_json(out / SUMMARY, _finite(summary))
        return summary


def metric_names(rows: list[Row]) -> list[str]:
    """Every metric any row has, in first-seen order (phase order, then the headline's)."""
    names: dict[str, None] = {}
    for row in rows:
        names |= dict.fromkeys(row["metrics"])
    return list(names)


def results_csv(plan: SweepPlan, rows: list[Row]) -> str:
    axes = plan.grid.axis_names
    metrics = metric_names(rows)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["trial", *axes, "status", "seconds", *metrics, "error", "run"])
    for row in rows:
        writer.writerow(
            [
                row["trial"],
                *(_cell(row["point"].get(a)) for a in axes),
                row["status"],
                _cell(row["seconds"]),
                *(_cell(row["metrics"].get(m)) for m in metrics),
                row["error"],
                row["run"],
            ]
        )
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


# -- aggregate ----------------------------------------------------------------------------
def aggregate(plan: SweepPlan, rows: list[Row]) -> dict[str, Any]:
    """Mean ± std over the seed axes per configuration (every other axis), completed
    trials only; a configuration none of whose trials completed is listed with n = 0."""
    seeds = plan.grid.seed_axes
    group_by = [a for a in plan.grid.axis_names if a not in seeds]
    groups: dict[str, list[Row]] = {}
    points: dict[str, dict[str, Any]] = {}
    for row in rows:
        config = {a: row["point"].get(a) for a in group_by}
        ident = json.dumps(config, sort_keys=True, default=str)
        groups.setdefault(ident, [])
        points.setdefault(ident, config)
        if row["status"] == "completed":
            groups[ident].append(row)
    metrics = metric_names(rows)
    configs = [
        {
            "point": points[ident],
            "label": point_label(points[ident]),
            "n": len(done),
            "seeds": [[r["point"].get(s) for s in seeds] for r in done] if seeds else [],
            "metrics": {m: _stats([r["metrics"].get(m) for r in done], m) for m in metrics},
        }
        for ident, done in groups.items()
    ]
    statuses = [r["status"] for r in rows]
    return {
        "sweep": plan.grid.name,
        "title": plan.grid.title,
        "source": plan.grid.source,
        "out": str(plan.out),
        "trials": len(rows),
        "completed": statuses.count("completed"),
        "failed": statuses.count("failed"),
        "remaining": len(rows) - statuses.count("completed") - statuses.count("failed"),
        "complete": statuses.count("completed") == len(rows),
        "axes": plan.grid.axis_names,
        "group_by": group_by,
        "seed_axes": seeds,
        "metrics": metrics,
        "configs": configs,
    }


def _stats(values: list[Any], name: str) -> dict[str, Any]:
    present = [v for v in values if v is not None]
    if name.rsplit(".", 1)[-1] in CATEGORICAL or any(isinstance(v, str) for v in present):
        return {"values": present, "n": len(present)}
    numbers = [float(v) for v in present if isinstance(v, int | float) and math.isfinite(v)]
    if not numbers:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
    return {"mean": statistics.fmean(numbers), "std": std, "n": len(numbers)}


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: they become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def summary_table(summary: Mapping[str, Any]) -> str:
    """The aggregate as a Markdown table: one line per configuration, mean ± std (n)."""
    group_by, metrics = summary["group_by"], summary["metrics"]
    over = " over " + ", ".join(summary["seed_axes"]) if summary["seed_axes"] else ""
    lines = [
        f"{summary['sweep']}: {summary['completed']}/{summary['trials']} trials completed, "
        f"{summary['failed']} failed (mean ± std{over})",
        "",
        "| " + " | ".join([*group_by, "n", *metrics]) + " |",
        "|" + "---|" * (len(group_by) + 1 + len(metrics)),
    ]
    for config in summary["configs"]:
        cells = [_cell(config["point"].get(a)) for a in group_by] + [str(config["n"])]
        cells += [_shown(m, config["metrics"].get(m, {})) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _shown(name: str, stats: Mapping[str, Any]) -> str:
    if "values" in stats:
        return ",".join(str(v) for v in stats["values"]) or "-"
    if stats.get("mean") is None:
        return "-"
    if "test_acc" in name or "retention" in name or name.endswith(("removed", "_accuracy")):
        return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}%"
    return f"{stats['mean']:.3g} ± {stats['std']:.2g}"


def read_rows(out: Path) -> list[Row]:
    """The rows of ``out/results.jsonl`` (what a viewer or a report reads back)."""
    try:
        text = (out / RESULTS_JSONL).read_text(encoding="utf-8")
    except OSError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
