"""The SoK table's arithmetic: rows of attack verdicts -> cells, markdown and findings.

Kept apart from ``sok_attacks.py`` (which runs the jobs) so the counting can be read and
tested on its own. A cell is one attack on one scheme over the seeds: how many seeds the
summary's ``removed`` (the SoK's success rule) was true, over how many had a verdict, and the
test accuracy after the attack. An attack *removes* a scheme when it did in most seeds with a
verdict; the three findings of Lukas et al. (S&P 2022) are decided from those cells alone.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

#: the family of the SoK's combined attacks (chains), beside the registry's families
COMBINED_FAMILY = "combined"


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
                "problems": [],
            },
        )
        cell["runs"] += 1
        if row["status"] != "completed":
            cell["problems"].append(f"{row['status']}: {row.get('reason', '')}")
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


def findings(table: list[dict[str, Any]], schemes: Sequence[str]) -> list[dict[str, Any]]:
    """The SoK's three findings, each ``holds`` True/False (None: too few verdicts), with the
    evidence, computed from the table: an attack removes a scheme when it does in most seeds."""

    def removes(entry: dict[str, Any], scheme: str) -> bool | None:
        cell = entry["cells"].get(scheme)
        return None if cell is None else cell["removes"]

    single = [e for e in table if e["family"] != COMBINED_FAMILY]
    combined = [e for e in table if e["family"] == COMBINED_FAMILY]
    out = []
    # (1) no scheme survives all attacks: every scheme is removed by some attack
    broken = {s: [e["attack"] for e in single + combined if removes(e, s)] for s in schemes}
    unjudged = [
        s
        for s in schemes
        if not broken[s] and not any(removes(e, s) is not None for e in single + combined)
    ]
    survivors = [s for s in schemes if not broken[s] and s not in unjudged]
    out.append(
        {
            "finding": "no scheme survives all attacks",
            "holds": None if unjudged else not survivors,
            "evidence": "; ".join(
                f"{s}: "
                + (
                    f"removed by {len(broken[s])} ({', '.join(broken[s][:4])}"
                    + (", ..." if len(broken[s]) > 4 else "")
                    + ")"
                    if broken[s]
                    else ("no verdicts" if s in unjudged else "survives every attack")
                )
                for s in schemes
            ),
        }
    )
    # (2) no attack removes all schemes
    verdicts = {e["attack"]: [removes(e, s) for s in schemes] for e in single + combined}
    judged = {a: v for a, v in verdicts.items() if all(x is not None for x in v)}
    universal = [a for a, v in judged.items() if all(v)]
    out.append(
        {
            "finding": "no attack removes all schemes",
            "holds": None if not judged else not universal,
            "evidence": (
                f"removes every scheme: {', '.join(universal)}"
                if universal
                else f"none of the {len(judged)} attacks with a verdict on every scheme does"
            ),
        }
    )
    # (3) the combined attacks remove all schemes
    if not combined:
        out.append(
            {
                "finding": "the combined attacks remove all schemes",
                "holds": None,
                "evidence": "no combined attack ran",
            }
        )
    else:
        missing = [(e["attack"], s) for e in combined for s in schemes if not removes(e, s)]
        unknown = [
            (a, s)
            for a, s in missing
            if removes(next(e for e in combined if e["attack"] == a), s) is None
        ]
        fallen = [s for s in schemes if any(removes(e, s) for e in combined)]
        out.append(
            {
                "finding": "the combined attacks remove all schemes",
                "holds": None if unknown else not missing,
                "evidence": (
                    (
                        "every combined attack removes every scheme"
                        if not missing
                        else "not removed: " + ", ".join(f"{s} by {a}" for a, s in missing)
                    )
                    + f"; schemes removed by at least one combined attack: "
                    f"{len(fallen)}/{len(schemes)}"
                ),
            }
        )
    return out


def findings_text(items: list[dict[str, Any]]) -> str:
    word = {True: "HOLDS", False: "DOES NOT HOLD", None: "UNDECIDED"}
    return "\n".join(
        f"({i}) {item['finding']}: {word[item['holds']]} ({item['evidence']})"
        for i, item in enumerate(items, 1)
    )
