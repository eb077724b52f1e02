"""The report page: one self-contained HTML file, readable offline and printable.

Figures are inline ``<svg>`` and pictures ``data:`` PNGs, styles inline: the file needs no
network and no script. It never contains ``http://`` or ``https://``: matplotlib's namespace,
DOCTYPE and metadata URLs are dropped from each SVG (inline SVG in HTML5 needs none of them),
and any such text from the run (a path, a scenario description) is written with an entity
(``https:&#47;&#47;``) that reads the same but is no link.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from typing import Any

from engine.jobs.success import cost_text, yes_no
from engine.metrics import percent
from engine.reports.collect import RecipeData, RunData, Scan

CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1a202c;
       max-width: 1100px; margin: 0 auto; padding: 24px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; } h2 { font-size: 20px; margin: 32px 0 8px;
     border-bottom: 2px solid #e2e8f0; padding-bottom: 4px; } h3 { font-size: 16px; }
.meta { color: #4a5568; margin: 0 0 12px; } .meta code { font-size: 13px; }
nav { background: #f7fafc; border: 1px solid #e2e8f0; padding: 8px 12px; border-radius: 6px; }
nav a { margin-right: 14px; color: #2b6cb0; text-decoration: none; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #e2e8f0; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f7fafc; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 12px 0 20px; } figure svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #4a5568; font-size: 13px; margin-top: 4px; }
.triggers { display: flex; flex-wrap: wrap; gap: 18px; }
.triggers figure { margin: 0; text-align: center; }
.triggers img { width: 112px; height: 112px; image-rendering: pixelated;
                border: 1px solid #cbd5e0; background: #000; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
         font-size: 12px; color: #fff;
         white-space: nowrap; }
.pass { background: #2f855a; } .fail { background: #c53030; } .none { background: #a0aec0; }
.note { background: #fffaf0; border-left: 4px solid #dd6b20; padding: 6px 10px; }
pre { background: #f7fafc; padding: 8px; overflow-x: auto; font-size: 13px; }
.empty { color: #718096; font-style: italic; }
"""
RUN_SECTIONS = (
    ("phases", "Phases"),
    ("curves", "Curves"),
    ("scans", "Scans"),
    ("triggers", "Triggers"),
    ("verification", "Verification"),
    ("sweeps", "Sweeps"),
    ("configuration", "Configuration"),
    ("versions", "Versions"),
)
RECIPE_SECTIONS = (("comparison", "Paper comparison"), ("trials", "Trials"))


# -- text --------------------------------------------------------------------------------------
def esc(value: Any) -> str:
    """Escaped text, with any URL scheme's ``//`` as entities: the same to read, no link."""
    return html.escape(str(value)).replace("://", ":&#47;&#47;")


def fmt(value: Any) -> str:
    """A plain value for a table cell (not a rate): numbers to 4 significant digits."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(", ", ": "), default=str)
    return str(value)


def rate(value: Any) -> str:
    return percent(value) if isinstance(value, int | float) and not isinstance(value, bool) else "–"


def p_value(stats: dict[str, Any]) -> str:
    """A p-value, as a power of ten when it underflows."""
    p, log10 = stats.get("p_value"), stats.get("log10_p_value")
    if isinstance(p, int | float) and p > 1e-300:
        return f"{p:.3g}"
    if isinstance(log10, int | float):
        return f"10^{log10:.1f}"
    return fmt(p)


def table(headers: list[str], rows: list[list[str]], numeric: set[int] | None = None) -> str:
    """Rows of already-escaped cells."""
    numeric = numeric or set()
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class='num'>{cell}</td>" if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def empty(text: str) -> str:
    return f"<p class='empty'>{esc(text)}</p>"


def verified(ok: Any) -> str:
    if ok is None:
        return badge(None)
    return f"<span class='badge {'pass' if ok else 'fail'}'>{'' if ok else 'not '}verified</span>"


def badge(ok: Any) -> str:
    if ok is True:
        return "<span class='badge pass'>pass</span>"
    if ok is False:
        return "<span class='badge fail'>fail</span>"
    return "<span class='badge none'>unchecked</span>"


# -- figures -----------------------------------------------------------------------------------
def inline_svg(svg: str, prefix: str) -> str:
    """matplotlib's SVG made fit to sit in an HTML page: no XML prolog, DOCTYPE, metadata or
    namespaces (each carries a URL), ``xlink:href`` as SVG 2's ``href``, and every id
    prefixed so two figures' clip paths never collide."""
    svg = svg[svg.index("<svg") :]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)
    svg = svg.replace("xlink:href=", "href=")
    svg = re.sub(
        r'(\bid="|url\(#|href="#)([^")]+)', lambda m: f"{m.group(1)}{prefix}-{m.group(2)}", svg
    )
    return svg.replace("://", ":&#47;&#47;")


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"


def scan_name(prefix: str, index: int, scan: Scan) -> str:
    """The name of a scan's figure: its id in the page and its file in ``figures/``."""
    return f"{prefix}scan-{index + 1}-{slug(scan.name)}"


def sweep_name(prefix: str, index: int, phase: str) -> str:
    return f"{prefix}sweep-{index + 1}-{slug(phase)}"


def figure(svgs: dict[str, str], name: str, caption: str) -> str:
    if name not in svgs:
        return ""
    return (
        f"<figure id='fig-{esc(name)}'>{svgs[name]}<figcaption>{esc(caption)}</figcaption></figure>"
    )


def image(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (
        f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
        f"<figcaption>{esc(caption)}</figcaption></figure>"
    )


# -- a run or scenario -------------------------------------------------------------------------
def run_sections(data: RunData, svgs: dict[str, str], prefix: str = "", level: int = 2) -> str:
    """Every section of a run report; ``prefix`` names its figures and ids (a recipe's
    trial), ``level`` its heading level."""
    parts = {
        "phases": phases_table(data),
        "curves": figure(
            svgs,
            f"{prefix}curves",
            "test accuracy and retention (%) above, loss below; "
            "dashed lines mark where each phase starts",
        )
        or empty("No metrics were recorded."),
        "scans": "".join(scan_block(s, i, svgs, prefix) for i, s in enumerate(data.scans))
        or empty("No detector scan in this run."),
        "triggers": triggers_block(data),
        "verification": verdict_table(data) or empty("No verification statistics recorded."),
        "sweeps": "".join(
            figure(svgs, sweep_name(prefix, i, name), f"{name}: one attack per ratio")
            + sweep_table(rows)
            for i, (name, rows) in enumerate(data.sweeps)
        ),
        "configuration": config_block(data),
        "versions": table(
            ["package", "version"], [[esc(k), esc(v)] for k, v in data.versions.items()]
        )
        if data.versions
        else empty("The manifest records no versions."),
    }
    out = []
    for key, title in RUN_SECTIONS:
        if key == "sweeps" and not data.sweeps:
            continue
        out.append(
            f"<section id='{prefix}{key}'><h{level}>{title}</h{level}>{parts[key]}</section>"
        )
    return "".join(out)


def phases_table(data: RunData) -> str:
    rows = []
    for i, p in enumerate(data.phases, start=1):
        retention = p.get("retention") if isinstance(p.get("retention"), dict) else {}
        before = p.get("retention_before") if isinstance(p.get("retention_before"), dict) else {}
        kept = "<br>".join(
            f"{esc(k)} {rate(v)}" + (f" (was {rate(before[k])})" if k in before else "")
            for k, v in retention.items()
        )
        acc = rate(p.get("test_acc"))
        if "test_acc_before" in p:
            acc += f" (was {rate(p.get('test_acc_before'))})"
        rows.append(
            [
                str(i),
                esc(p.get("name", "")),
                esc(p.get("kind", "")),
                esc(p.get("plugin", "") or ""),
                esc(p.get("status", "")),
                acc,
                kept or "–",
                flagged(p),
                esc(fmt(p.get("anomaly_index"))),
                removed_cell(p),
                esc(cost_text(p.get("cost"))),
            ]
        )
    headers = ["#", "phase", "kind", "plugin", "status", "test acc", "retention", "flagged"]
    return table([*headers, "anomaly index", "removed (SoK)", "cost"], rows, {0, 5, 8})


def removed_cell(phase: dict[str, Any]) -> str:
    """An attack's SoK verdict, its reason on hover; "–" where nothing was attacked."""
    if "removed" not in phase:
        return "–"
    why = (phase.get("_summary") or {}).get("why") or phase.get("why") or ""
    return f"<span title='{esc(why)}'>{esc(yes_no(phase['removed']))}</span>"


def flagged(phase: dict[str, Any]) -> str:
    """A detect phase's verdict: the class, or "none"; "–" for phases that scan nothing."""
    if "flagged_class" not in phase:
        return "–"
    value = phase["flagged_class"]
    return "none" if value is None else esc(fmt(value))


def scan_block(scan: Scan, index: int, svgs: dict[str, str], prefix: str) -> str:
    facts = [
        ("flagged class", fmt(scan.flagged) if scan.flagged is not None else "none"),
        ("anomaly index of the smallest", fmt(scan.anomaly_index)),
        ("next class / smallest", fmt(scan.gap_ratio)),
        ("rule", scan.rule),
        ("MAD flag line", fmt(scan.flag_line)),
        ("threshold T", fmt(scan.threshold)),
    ]
    sizes = table(
        ["class", scan.size_kind, "search success"],
        [
            [str(c), fmt(s), rate(scan.success[c]) if c < len(scan.success) else "–"]
            for c, s in enumerate(scan.sizes)
        ],
        {0, 1, 2},
    )
    caption = (
        f"{scan.name}: {scan.size_kind} per class; red: the flagged class (else the smallest); "
        "dotted: the size a class must fall below to be flagged (MAD index 2 and the gap)"
    )
    facts_table = table(["", ""], [[esc(k), esc(v)] for k, v in facts])
    return (
        f"<h3>{esc(scan.name)}</h3>"
        + figure(svgs, scan_name(prefix, index, scan), caption)
        + f"<details><summary>numbers</summary>{facts_table}{sizes}</details>"
    )


def triggers_block(data: RunData) -> str:
    if not data.triggers:
        return empty("No trigger pictures were recorded (a scan that flags nothing has none).")
    shown = "".join(
        image(t.png, f"{t.phase}: {t.name} ({t.size[0]}x{t.size[1]})") for t in data.triggers
    )
    return (
        "<p>The true trigger (a key sample as the model is queried with it) and what a "
        "detector reversed, as the playground shows them.</p>"
        f"<div class='triggers'>{shown}</div>"
    )


def verdict_table(data: RunData) -> str:
    if not data.verdicts:
        return ""
    rows = [
        [
            esc(v.get("phase", "")),
            esc(v.get("key set", "")),
            rate(v.get("retention")),
            esc(f"{fmt(v.get('matches'))}/{fmt(v.get('n_key'))}"),
            rate(v.get("null_rate")),
            esc(p_value(v)),
            esc(fmt(v.get("alpha"))),
            verified(v.get("verified")),
            esc(v.get("null_reason", "")),
        ]
        for v in data.verdicts
    ]
    headers = ["phase", "key set", "retention", "matches", "null rate", "p-value", "alpha"]
    return table([*headers, "verdict", "null from"], rows, {2, 3, 4, 5, 6})


def sweep_table(rows: list[dict[str, Any]]) -> str:
    keys = sorted({k for r in rows if isinstance(r.get("retention"), dict) for k in r["retention"]})
    body = [
        [
            esc(fmt(r.get("ratio"))),
            rate(r.get("pruned")),
            rate(r.get("test_acc")),
            *[rate((r.get("retention") or {}).get(k)) for k in keys],
            removed_cell(r),
        ]
        for r in rows
        if isinstance(r, dict)
    ]
    headers = ["ratio", "pruned", "test acc", *[f"retention {k}" for k in keys], "removed"]
    return table(headers, body, set(range(len(headers))))


def config_block(data: RunData) -> str:
    description = f"<p>{esc(data.description)}</p>" if data.description else ""
    rows = [[f"<code>{esc(k)}</code>", esc(fmt(v))] for k, v in flatten(data.config)]
    return description + table(["setting", "value"], rows)


def flatten(value: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested settings as dotted names (``config.epochs``); lists stay whole."""
    out: list[tuple[str, Any]] = []
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict) and item:
            out += flatten(item, f"{name}.")
        else:
            out.append((name, item))
    return out


def run_page(data: RunData, svgs: dict[str, str]) -> str:
    sections = [(k, t) for k, t in RUN_SECTIONS if k != "sweeps" or data.sweeps]
    kind = "scenario" if data.kind == "scenario" else f"{data.command} run"
    meta = (
        f"{esc(kind)} · status <b>{esc(data.status)}</b> · "
        f"created {esc(data.versions.get('created', '–'))} · <code>{esc(data.path)}</code>"
    )
    return document(data.title, meta, sections, notes(data.notes) + run_sections(data, svgs))


# -- a recipe ----------------------------------------------------------------------------------
def first_trial(first: RunData, svgs: dict[str, str]) -> str:
    """A recipe's or a sweep's first completed trial, in full."""
    return (
        f"<section id='trial'><h2>First trial: {esc(first.path.name)}</h2>"
        f"<p class='meta'><code>{esc(first.path)}</code></p>"
        f"{run_sections(first, svgs, prefix='trial-', level=3)}</section>"
    )


def phase_headline(phase: dict[str, Any]) -> str:
    """ "ft-basic: 87.54% acc, key 55.60%" (or the phase's status when it measured nothing)."""
    name = esc(phase.get("name", ""))
    if "test_acc" not in phase:
        return f"{name}: {esc(phase.get('status', 'not run'))}"
    retention = phase.get("retention") if isinstance(phase.get("retention"), dict) else {}
    kept = "".join(f", {esc(k)} {rate(v)}" for k, v in retention.items())
    scan = f", flagged {flagged(phase)}" if "flagged_class" in phase else ""
    return f"{name}: {rate(phase.get('test_acc'))} acc{kept}{scan}"


def trials_table(data: RecipeData) -> str:
    if not data.trials:
        return empty("The recipe result lists no trials.")
    rows = []
    for t in data.trials:
        headline = "<br>".join(phase_headline(p) for p in t.get("_phases", []))
        rows.append(
            [
                esc(t.get("id", "")),
                esc(fmt(t.get("params", {}))),
                esc(t.get("status", "")),
                f"<code>{esc(t.get('run', ''))}</code>",
                headline or "–",
            ]
        )
    return table(["trial", "params", "status", "folder", "phases"], rows)


# -- the page ----------------------------------------------------------------------------------
def notes(lines: list[str]) -> str:
    return "".join(f"<p class='note'>{esc(line)}</p>" for line in lines)


def document(title: str, meta: str, sections: list[tuple[str, str]], body: str) -> str:
    nav = "".join(f"<a href='#{key}'>{esc(name)}</a>" for key, name in sections)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)} · wmtui report</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><p class='meta'>{meta}</p><nav>{nav}</nav></header>"
        f"<main>{body}</main>"
        "<footer><p class='meta'>Written by <code>wmtui report</code>. Figures are also in "
        "<code>figures/</code> beside this file, as SVG and PDF.</p></footer>"
        "</body></html>\n"
    )
