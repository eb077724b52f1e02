"""The SoK table's arithmetic and its text: rows of attack verdicts -> cells, markdown,
findings, and the files they are written to.

Kept apart from ``sok_attacks.py`` (which runs the jobs) so the counting can be read and
tested on its own. A cell is one attack on one scheme over the seeds: how many seeds the
summary's ``removed`` (the SoK's success rule) was true, over how many had a verdict, and the
test accuracy after the attack. An attack *removes* a scheme when it did in most seeds with a
verdict; the three findings of Lukas et al. (S&P 2022) are decided from those cells alone.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.io import atomic_write_bytes, atomic_write_json

#: the family of the SoK's combined attacks (chains), beside the registry's families
COMBINED_FAMILY = "combined"
#: the first row: the watermarked models before any attack, judged by the same rule
BASELINE, BASELINE_FAMILY = "no attack (watermarked)", "none"


def pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, int | float) else "-"


def aggregate(rows: Iterable[dict[str, Any]], schemes: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per attack (in the rows' order): per scheme the removed count over the
    judged seeds and the accuracy mean +- sd; the attack's mean wall time over every cell."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = table.setdefault(
            row["attack"], {"attack": row["attack"], "family": row["family"], "cells": {}}
        )
        cell = entry["cells"].setdefault(
            row["scheme"],
            {
                "removed": 0,
                "judged": 0,
                "acc": [],
                "wm": [],
                "seconds": [],
                "runs": 0,
                "na": 0,
                "problems": [],
            },
        )
        cell["runs"] += 1
        if row["status"] != "completed":
            cell["problems"].append(f"{row['status']}: {row.get('reason', '')}")
            cell["na"] += row["status"] == "n/a"
            continue
        if row.get("removed") is not None:
            cell["judged"] += 1
            cell["removed"] += bool(row["removed"])
        for key, name in (("acc", "test_acc"), ("wm", "wm_accuracy"), ("seconds", "seconds")):
            if isinstance(row.get(name), int | float):
                cell[key].append(float(row[name]))
    for entry in table.values():
        for cell in entry["cells"].values():
            cell["acc_mean"], cell["acc_sd"] = mean_sd(cell["acc"])
            cell["wm_mean"], cell["wm_sd"] = mean_sd(cell["wm"])
            cell["rate"] = cell["removed"] / cell["judged"] if cell["judged"] else None
            # the SoK's "removes": in most of the seeds a verdict was given for
            cell["removes"] = None if not cell["judged"] else cell["removed"] * 2 > cell["judged"]
        seconds = [s for c in entry["cells"].values() for s in c["seconds"]]
        entry["seconds"] = statistics.fmean(seconds) if seconds else None
        entry["schemes"] = [s for s in schemes if s in entry["cells"]]
    return list(table.values())


def mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def cell_text(cell: dict[str, Any] | None) -> str:
    """``2/3  85.12 ± 0.40``: removed over judged seeds, test accuracy (%) after the attack."""
    if cell is None:
        return "—"
    if not cell["acc"]:
        return "n/a" if cell["problems"] else "—"
    rate = f"{cell['removed']}/{cell['judged']}" if cell["judged"] else "?"
    return f"{rate}  {100 * cell['acc_mean']:.2f} ± {100 * cell['acc_sd']:.2f}"


def markdown(table: list[dict[str, Any]], schemes: Sequence[str]) -> str:
    lines = [
        "| family | attack | " + " | ".join(schemes) + " | mean cost (s) |",
        "|---|---|" + "---|" * len(schemes) + "---:|",
    ]
    for entry in table:
        cells = " | ".join(cell_text(entry["cells"].get(s)) for s in schemes)
        seconds = "-" if entry["seconds"] is None else f"{entry['seconds']:.1f}"
        lines.append(f"| {entry['family']} | {entry['attack']} | {cells} | {seconds} |")
    return "\n".join(lines)


def verdict(values: Sequence[bool | None], want: bool) -> bool | None:
    """Whether some value is ``want``: True if one is, False if every value is known and none
    is, None while an unknown one could still be (or there is none)."""
    if any(v is want for v in values):
        return True
    return None if not values or any(v is None for v in values) else False


def findings(table: list[dict[str, Any]], schemes: Sequence[str]) -> list[dict[str, Any]]:
    """The SoK's three findings, each ``holds`` True, False or None (undecided: a verdict it
    needs is missing), with the evidence, decided from the table alone. An attack *removes* a
    scheme when it did in most seeds with a verdict. Findings (1) and (2) are about single
    attacks (preprocessing, modification), (3) about the combined ones: every scheme falls to
    at least one combined attack (the evidence names any that removes every scheme alone)."""

    def removes(entry: dict[str, Any], scheme: str) -> bool | None:
        cell = entry["cells"].get(scheme)
        return None if cell is None else cell["removes"]

    def applies(entry: dict[str, Any], scheme: str) -> bool:
        """False when the attack could not run on the scheme with this budget (n/a): such a
        cell is no verdict to wait for; a missing or failed one is."""
        cell = entry["cells"].get(scheme)
        return cell is None or cell["na"] < cell["runs"]

    single = [
        e
        for e in table
        if e["family"] not in (COMBINED_FAMILY, BASELINE_FAMILY)
        and any(applies(e, s) for s in schemes)
    ]
    combined = [
        e for e in table if e["family"] == COMBINED_FAMILY and any(applies(e, s) for s in schemes)
    ]

    def by_scheme(entries: list[dict[str, Any]]) -> dict[str, bool | None]:
        """Per scheme: is it removed by at least one of ``entries``?"""
        return {
            s: verdict([removes(e, s) for e in entries if applies(e, s)], True) for s in schemes
        }

    def removers(entries: list[dict[str, Any]], scheme: str) -> str:
        names = [e["attack"] for e in entries if removes(e, scheme)]
        return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")

    fallen = by_scheme(single)
    survivors = [s for s, v in fallen.items() if v is False]
    one = {
        "finding": "no scheme survives all attacks",
        "holds": not survivors if survivors or None not in fallen.values() else None,
        "evidence": "; ".join(
            f"{s}: "
            + {True: f"removed by {removers(single, s)}", False: "survives every attack"}.get(
                v, "undecided (missing verdicts)"
            )
            for s, v in fallen.items()
        ),
    }
    # an attack removes every scheme unless one scheme is known to survive it
    universal = {
        e["attack"]: verdict([removes(e, s) for s in schemes if applies(e, s)], False)
        for e in single
    }
    everything = [a for a, survived in universal.items() if survived is False]
    two = {
        "finding": "no attack removes all schemes",
        "holds": (not everything) if everything or None not in universal.values() else None,
        "evidence": f"removes every scheme: {', '.join(everything)}"
        if everything
        else f"each of the {len(universal)} single attacks leaves some scheme in place"
        if universal and None not in universal.values()
        else "undecided: some attacks lack verdicts",
    }
    if not single:
        one["holds"] = two["holds"] = None
    stacked = by_scheme(combined)
    alone = [e["attack"] for e in combined if all(removes(e, s) for s in schemes if applies(e, s))]
    three = {
        "finding": "the combined attacks remove all schemes",
        "holds": None
        if not combined or (None in stacked.values() and False not in stacked.values())
        else False not in stacked.values(),
        "evidence": "no combined attack ran"
        if not combined
        else "; ".join(
            f"{s}: "
            + {True: f"removed by {removers(combined, s)}", False: "survives them all"}.get(
                v, "undecided"
            )
            for s, v in stacked.items()
        )
        + (f"; every scheme by one alone: {', '.join(alone)}" if alone else ""),
    }
    return [one, two, three]


def findings_text(items: list[dict[str, Any]]) -> str:
    word = {True: "HOLDS", False: "DOES NOT HOLD", None: "UNDECIDED"}
    return "\n".join(
        f"({i}) {item['finding']}: {word[item['holds']]} ({item['evidence']})"
        for i, item in enumerate(items, 1)
    )


def not_applicable(table: list[dict[str, Any]]) -> list[str]:
    """``attack: reason`` for every attack that could not run with the budget (n/a cells),
    once per reason: said under the table, and left out of the findings."""
    lines: dict[str, None] = {}
    for entry in table:
        for cell in entry["cells"].values():
            for problem in cell["problems"]:
                if problem.startswith("n/a: "):
                    lines[f"{entry['attack']}: {problem.removeprefix('n/a: ')}"] = None
    return list(lines)


def slowest(rows: Iterable[dict[str, Any]], count: int = 5) -> str:
    """The attacks whose jobs took longest, mean wall time per job (the referee's
    measurements included): where a shorter run should cut."""
    times: dict[str, list[float]] = {}
    for row in rows:
        if row.get("family") != BASELINE_FAMILY and isinstance(row.get("job_seconds"), int | float):
            times.setdefault(row["attack"], []).append(float(row["job_seconds"]))
    ranked = sorted(times.items(), key=lambda item: -statistics.fmean(item[1]))[:count]
    return ", ".join(f"{name} {statistics.fmean(values):.0f} s" for name, values in ranked)


def finish(out: Path, context: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    """Print the table and the findings; write them (markdown and JSON) to ``out``."""
    schemes = context["schemes"]
    table = aggregate(rows, schemes)
    found = findings(table, schemes)
    attacked = [r for r in rows if r["family"] != BASELINE_FAMILY]
    reused = sum(1 for r in attacked if r.get("reused"))
    head = (
        f"`{context['command']}`: {context['dataset']} + {context['model']}, seeds "
        f"{', '.join(map(str, context['seeds']))}, scale {context['scale']}, "
        f"{context['seconds'] / 60:.1f} min, {context['threads']} "
        f"({reused} of {len(attacked)} attacks reused from an earlier run"
        + (
            f"; INCOMPLETE: {len(attacked)} of {context['planned']} attacks ran)"
            if len(attacked) < context["planned"]
            else ")"
        )
    )
    legend = (
        "Cells: removed in k of n seeds with a verdict (the SoK's rule: test accuracy within "
        "5 points of the unmarked models' and key accuracy at or below the threshold), then "
        "test accuracy after the attack, mean ± sd (%). Mean cost: the attack's own wall time "
        "(its summary's cost; the referee's measurements before and after are not in it). The "
        "first row judges the watermarked models themselves: 0/n when each is above its "
        "threshold."
    )
    if slowest(rows):
        legend += f" Slowest jobs (mean wall time, referee included): {slowest(rows)}."
    skipped = not_applicable(table)
    if skipped:  # attacks the budget does not allow: n/a cells, outside the findings
        legend += " Not applicable with this budget, and left out of the findings: " + "; ".join(
            skipped
        )
    text = "\n\n".join([head, markdown(table, schemes), legend, findings_text(found)])
    print(text, flush=True)
    write_outputs(out, context | {"rows": rows, "table": table, "findings": found}, text)
    print(f"written: {out} and its JSON", file=sys.stderr, flush=True)


def write_outputs(path: Path, report: dict[str, Any], text: str) -> None:
    """The markdown at ``path`` (or beside a ``.json`` path) and the JSON beside it."""
    md, js = (
        (path.with_suffix(".md"), path)
        if path.suffix == ".json"
        else (path, path.with_suffix(".json"))
    )
    atomic_write_bytes(md, (text + "\n").encode())
    atomic_write_json(js, report)


def row_line(row: dict[str, Any]) -> str:
    head = f"{row['scheme']:9} seed {row['seed']}  {row['attack']:28}"
    if row["status"] != "completed":
        return f"{head} {row['status']}: {row.get('reason', '')}"
    removed = {True: "removed", False: "kept", None: "unknown"}[row.get("removed")]
    seconds = row.get("seconds")
    return (
        f"{head} {removed:8} test acc {pct(row.get('test_acc'))}  key acc "
        f"{pct(row.get('wm_accuracy'))}  "
        + (f"{seconds:.1f} s" if seconds is not None else "")
        + (" (reused)" if row.get("reused") else "")
    )
