"""Read a run, scenario, recipe or sweep folder into plain data for a report: no figures, no
HTML.

Only JSON files (manifest, summary, ``events.jsonl``, ``recipe.json``, a sweep's
``results.jsonl``) and a detector's ``reversed/*.png`` are read. Trigger images come from the
``TriggerPreview`` events the playground itself shows (the true trigger, the reversed one); key
folders are never opened, so nothing of a key reaches a report that the TUI did not already
show, and nothing is unpickled. A bad top-level file is a :class:`RunError` (one line, exit 2
in the CLI); a bad file deeper down (one trial of a recipe or a sweep) becomes a note in the
report instead. The event stream (curves, pictures) is read by :mod:`engine.reports.stream`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from engine.deploy import describe_deployment
from engine.errors import RunError
from engine.metrics import mad_flag_line
from engine.reports.stream import (
    MAX_TRIGGERS,
    Timeline,
    Trigger,
    finite,
    fold_timeline,
    number,
    read_events,
    reversed_pngs,
    source_triggers,
    triggers_from_events,
)
from engine.runs import EVENTS, MANIFEST, SUMMARY, read_json
from engine.studies.scenario_runner import HEADLINE
from engine.studies.sweep_results import RESULTS_JSONL

RECIPE_FILE = "recipe.json"
#: manifest fields that are versions, shown apart from the configuration
VERSION_FIELDS = ("wmtui_version", "python", "torch", "torchvision", "platform", "created")
#: a field whose name holds one of these is never shown (paths to keys are, their content not)
SECRET_WORDS = ("private", "passphrase", "password", "secret", "token")
#: what a verdict may show: statistics only, never a key's description or material
VERDICT_FIELDS = (
    "retention",
    "matches",
    "n_key",
    "null_rate",
    "p_value",
    "log10_p_value",
    "alpha",
    "verified",
    "test_acc",
    "clean_rate",
    "decoy_rate",
    "null_reason",
    "null_acc",
    "true_acc",
    "signature_valid",
)


@dataclasses.dataclass
class Scan:
    """One detect phase's per-class sizes and its decision, with the lines the TUI draws:
    the MAD flag line (where a bar is flagged) and the threshold T where the rule uses it."""

    name: str
    sizes: list[float]
    size_kind: str
    flagged: int | None
    anomaly_index: float | None
    gap_ratio: float | None
    rule: str
    threshold: float | None
    flag_line: float | None
    success: list[float]
    previous: Scan | None = None


@dataclasses.dataclass
class RunData:
    """Everything a run or scenario report shows."""

    path: Path
    kind: str  # "run" | "scenario"
    command: str
    title: str
    description: str
    versions: dict[str, Any]
    config: dict[str, Any]
    phases: list[dict[str, Any]]
    timeline: Timeline
    scans: list[Scan]
    triggers: list[Trigger]
    verdicts: list[dict[str, Any]]
    sweeps: list[tuple[str, list[dict[str, Any]]]]
    status: str
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RecipeData:
    """A recipe's comparison with its paper, its trials, and the first trial's report."""

    path: Path
    result: dict[str, Any]
    cells: list[dict[str, Any]]
    trials: list[dict[str, Any]]
    first: RunData | None
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def title(self) -> str:
        return str(self.result.get("title") or self.result.get("recipe") or self.path.name)


@dataclasses.dataclass
class SweepData:
    """A sweep's aggregate (mean ± std over seeds per configuration), its trials' rows (as
    ``results.jsonl`` has them) and the first completed trial's report."""

    path: Path
    title: str
    name: str
    source: str
    axes: list[str]
    group_by: list[str]
    seed_axes: list[str]
    metrics: list[str]
    configs: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    counts: dict[str, Any]  # trials, completed, failed, remaining, complete, seconds
    config: dict[str, Any]  # the base training configuration (the manifest's)
    versions: dict[str, Any]
    first: RunData | None
    notes: list[str] = dataclasses.field(default_factory=list)


Source = RunData | RecipeData | SweepData


# -- entry point -------------------------------------------------------------------------------
def collect(path: Path) -> Source:
    """What ``path`` holds: a recipe (``recipe.json``), a sweep (manifest command ``sweep``,
    or ``results.jsonl`` beside a summary and no manifest), a scenario (manifest command
    ``scenario``) or a single run (any other manifest); anything else is a RunError."""
    if not path.exists():
        raise RunError(f"{path} not found: give a run, scenario, recipe or sweep folder")
    if not path.is_dir():
        raise RunError(f"{path} is a file; give a run, scenario, recipe or sweep folder")
    path = path.absolute()  # the page names the folder the same from wherever it ran
    if (path / RECIPE_FILE).is_file():
        return collect_recipe(path)
    if not (path / MANIFEST).is_file():
        if (path / RESULTS_JSONL).is_file() and (path / SUMMARY).is_file():
            return collect_sweep(path, {})
        raise RunError(
            f"{path} is not a run, scenario, recipe or sweep folder "
            f"(no {MANIFEST}, {RECIPE_FILE} or {RESULTS_JSONL})"
        )
    manifest = _object(read_json(path / MANIFEST, "run manifest"), path / MANIFEST)
    if manifest.get("command") == "reproduce":
        raise RunError(f"{path} is a recipe that has not finished: no {RECIPE_FILE} yet")
    if manifest.get("command") == "sweep":
        return collect_sweep(path, manifest)
    return collect_run(path, manifest)


def _object(value: Any, where: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RunError(f"{where} is corrupt: expected a JSON object")
    return value


# -- runs and scenarios ------------------------------------------------------------------------
def collect_run(path: Path, manifest: dict[str, Any]) -> RunData:
    command = str(manifest.get("command", "run"))
    scenario = manifest.get("scenario") if command == "scenario" else None
    summary: dict[str, Any] = {}
    notes: list[str] = []
    if (path / SUMMARY).is_file():
        summary = _object(read_json(path / SUMMARY, "run summary"), path / SUMMARY)
    else:
        notes.append("no summary.json: the run has not finished (or was cut short)")
    events = read_events(path / EVENTS)
    if scenario is not None:
        phases = scenario_phases(path, manifest, summary, notes)
        title = str(scenario.get("title") or scenario.get("name") or path.name)
        description = str(scenario.get("description", ""))
    else:
        phases = [single_phase(path, command, summary)]
        title, description = f"{command} run {path.name}", ""
    if not events:
        notes.append("no events.jsonl: no curves or trigger previews to show")
    triggers = triggers_from_events(events)
    if not any(t.name == "true trigger" for t in triggers):
        triggers = source_triggers(manifest) + triggers
    scans = []
    for phase in phases:
        folder, data = phase.get("_folder"), phase.get("_summary") or {}
        if phase.get("kind") == "detect" or "perturbation_sizes" in data:
            scan = scan_from(str(phase.get("name", "scan")), data)
            if scan is not None:
                scan.previous = scans[-1] if scans else None
                scans.append(scan)
            if folder is not None and not any(t.phase == phase.get("name") for t in triggers):
                triggers += reversed_pngs(Path(folder), str(phase.get("name", "")))
    return RunData(
        path=path,
        kind="scenario" if scenario is not None else "run",
        command=command,
        title=title,
        description=description,
        versions={k: manifest[k] for k in VERSION_FIELDS if k in manifest},
        config=public(
            {k: v for k, v in manifest.items() if k not in VERSION_FIELDS and k != "scenario"}
            | ({"served behind": served} if (served := describe_deployment(path)) else {})
        ),
        phases=phases,
        timeline=fold_timeline(events),
        scans=scans,
        triggers=triggers[:MAX_TRIGGERS],
        verdicts=[v for p in phases for v in verdicts_of(str(p.get("name")), p.get("_summary"))],
        sweeps=[
            (str(p.get("name")), rows)
            for p in phases
            if isinstance(rows := (p.get("_summary") or {}).get("sweep"), list) and rows
        ],
        status=str(summary.get("status", "unfinished")),
        notes=notes,
    )


def single_phase(path: Path, command: str, summary: dict[str, Any]) -> dict[str, Any]:
    """A single run as one row of the phase table."""
    row = {"name": command, "kind": command, "status": summary.get("status", "unfinished")}
    row |= {k: summary[k] for k in HEADLINE_FIELDS if k in summary}
    row["plugin"] = summary.get("scheme") or summary.get("attack") or summary.get("method") or ""
    return {**row, "_folder": str(path), "_summary": summary}


#: a run's headline numbers: a scenario phase's, and its time
HEADLINE_FIELDS = (*HEADLINE, "seconds")


def scenario_phases(
    root: Path, manifest: dict[str, Any], summary: dict[str, Any], notes: list[str]
) -> list[dict[str, Any]]:
    """The scenario summary's phases (or the manifest's plan when there is none yet), each
    with its own folder's summary attached under ``_summary`` for scans and verdicts."""
    listed = summary.get("phases")
    if not isinstance(listed, list):
        planned = (manifest.get("scenario") or {}).get("phases") or []
        listed = [
            {"name": p.get("name"), "kind": p.get("kind"), "plugin": p.get("plugin")}
            for p in planned
            if isinstance(p, dict)
        ]
    phases = []
    for index, item in enumerate(listed, start=1):
        if not isinstance(item, dict):
            continue
        phase = dict(item)
        phase.setdefault("status", "not run")
        folder = phase_folder(root, index, str(phase.get("name", "")))
        phase["_folder"] = str(folder) if folder else None
        phase["_summary"] = dict(item)
        if folder is not None and (folder / SUMMARY).is_file():
            try:
                own = read_json(folder / SUMMARY, "phase summary")
                phase["_summary"] = {**item, **own} if isinstance(own, dict) else dict(item)
            except RunError as exc:
                notes.append(str(exc))
        phases.append(phase)
    return phases


def phase_folder(root: Path, index: int, name: str) -> Path | None:
    """``root/NN-name``, the folder a scenario gives its phase (found by name when the
    numbering differs); None when the phase never made one."""
    exact = root / f"{index:02d}-{name}"
    if exact.is_dir():
        return exact
    found = sorted(p for p in root.glob(f"*-{name}") if p.is_dir() and p.name[:2].isdigit())
    return found[0] if found else None


# -- scans -------------------------------------------------------------------------------------
def scan_from(name: str, summary: dict[str, Any]) -> Scan | None:
    """A detect phase's scan from its summary; None when it measured no sizes."""
    sizes = summary.get("perturbation_sizes")
    if not isinstance(sizes, list) or not sizes or not all(finite(s) for s in sizes):
        return None
    sizes = [float(s) for s in sizes]
    rule = str(summary.get("rule", "mad"))
    threshold = summary.get("threshold")
    gap = number(summary.get("gap"), 1.0)
    flagged = summary.get("flagged_class")
    success = summary.get("success")
    return Scan(
        name=name,
        sizes=sizes,
        size_kind=str(summary.get("size_kind", "perturbation size")),
        flagged=flagged if isinstance(flagged, int) and not isinstance(flagged, bool) else None,
        anomaly_index=float(summary["anomaly_index"])
        if finite(summary.get("anomaly_index"))
        else None,
        gap_ratio=float(summary["gap_ratio"]) if finite(summary.get("gap_ratio")) else None,
        rule=rule,
        # the TUI's rule: T is drawn only where the decision uses it
        threshold=float(threshold) if finite(threshold) and rule != "mad" else None,
        flag_line=mad_flag_line(sizes, gap=gap),
        success=[float(s) for s in success if finite(s)] if isinstance(success, list) else [],
    )


# -- verdicts and configuration ----------------------------------------------------------------
def verdicts_of(phase: str, summary: Any) -> list[dict[str, Any]]:
    """Verification statistics of a run: the embed's ``verdicts`` per key set, a piracy's
    ``claims``; statistics only (see :data:`VERDICT_FIELDS`)."""
    if not isinstance(summary, dict):
        return []
    rows = []
    verdicts = summary.get("verdicts")
    if isinstance(verdicts, dict):
        for key, verdict in verdicts.items():
            if isinstance(verdict, dict):
                rows.append({"phase": phase, "key set": str(key), **_stats(verdict)})
    claims = summary.get("claims")
    if isinstance(claims, list):
        for index, verdict in enumerate(claims, start=1):
            if isinstance(verdict, dict):
                rows.append({"phase": phase, "key set": f"pirate claim {index}", **_stats(verdict)})
    return rows


def _stats(verdict: dict[str, Any]) -> dict[str, Any]:
    return {k: verdict[k] for k in VERDICT_FIELDS if k in verdict}


def public(value: Any) -> Any:
    """``value`` without fields named like secrets or strings holding a PEM private key."""
    if isinstance(value, dict):
        return {
            k: public(v)
            for k, v in value.items()
            if not any(word in str(k).lower() for word in SECRET_WORDS)
        }
    if isinstance(value, list):
        return [public(v) for v in value]
    if isinstance(value, str) and "PRIVATE KEY" in value:
        return "(hidden)"
    return value


# -- recipes -----------------------------------------------------------------------------------
def collect_recipe(path: Path) -> RecipeData:
    """``recipe.json``: its cells and trials; the first completed trial in full."""
    result = _object(read_json(path / RECIPE_FILE, "recipe result"), path / RECIPE_FILE)
    cells = [public(c) for c in result.get("cells") or [] if isinstance(c, dict)]
    trials, notes = [], []
    first: RunData | None = None
    first_done = False
    for item in result.get("trials") or []:
        if not isinstance(item, dict):
            continue
        trial = public(dict(item))
        trial["_phases"] = []
        folder = path / str(item.get("run", ""))
        if item.get("run") and (folder / MANIFEST).is_file():
            try:
                data = collect_run(
                    folder, _object(read_json(folder / MANIFEST, "manifest"), folder)
                )
            except RunError as exc:
                notes.append(f"trial {item.get('id')}: {exc}")
            else:
                trial["_phases"] = data.phases
                if item.get("status") == "completed" and (first is None or not first_done):
                    first, first_done = data, True
                elif first is None:
                    first = data  # no trial completed (yet): the first that has a folder
        trials.append(trial)
    return RecipeData(path, public(result), cells, trials, first, notes)


# -- sweeps ------------------------------------------------------------------------------------
def collect_sweep(path: Path, manifest: dict[str, Any]) -> SweepData:
    """``results.jsonl`` (one row per trial) and ``summary.json`` (the aggregate) as
    :mod:`engine.studies.sweep_results` writes them; the first completed trial in full."""
    if not (path / RESULTS_JSONL).is_file():
        raise RunError(f"{path} is a sweep that has written no results yet: no {RESULTS_JSONL}")
    rows = [public(row) for row in sweep_rows(path / RESULTS_JSONL)]
    notes: list[str] = []
    summary: dict[str, Any] = {}
    if (path / SUMMARY).is_file():
        summary = _object(read_json(path / SUMMARY, "sweep summary"), path / SUMMARY)
    else:
        notes.append(f"no {SUMMARY}: no mean ± std per configuration to show")
    axes = _names(summary.get("axes") or manifest.get("axes"))
    if not axes:  # the axes every row names, in first-seen order
        axes = list(dict.fromkeys(a for r in rows for a in r["point"]))
    statuses = [str(r.get("status", "")) for r in rows]
    counts = {k: summary.get(k) for k in ("trials", "completed", "failed", "remaining")}
    counts |= {"complete": summary.get("complete"), "seconds": summary.get("seconds")}
    counts["trials"] = counts["trials"] if isinstance(counts["trials"], int) else len(rows)
    for status in ("completed", "failed"):
        if not isinstance(counts[status], int):
            counts[status] = statuses.count(status)
    first: RunData | None = None
    for row in sorted(rows, key=lambda r: r.get("status") != "completed"):  # stable
        folder = trial_folder(path, row.get("run"))
        if folder is None or not (folder / MANIFEST).is_file():
            continue
        try:
            first = collect_run(folder, _object(read_json(folder / MANIFEST, "manifest"), folder))
            break
        except RunError as exc:
            notes.append(f"trial {row.get('trial')}: {exc}")
    if rows and first is None:
        notes.append("no trial folder could be read: no trial to show in full")
    name = str(summary.get("sweep") or manifest.get("sweep") or path.name)
    return SweepData(
        path=path,
        title=str(summary.get("title") or manifest.get("title") or name),
        name=name,
        source=str(summary.get("source") or manifest.get("source") or ""),
        axes=axes,
        group_by=_names(summary.get("group_by")),
        seed_axes=_names(summary.get("seed_axes")),
        metrics=_names(summary.get("metrics"))
        or list(dict.fromkeys(m for r in rows for m in r["metrics"])),
        configs=[public(c) for c in summary.get("configs") or [] if isinstance(c, dict)],
        rows=rows,
        counts=counts,
        config=public(manifest.get("config") or {}),
        versions={k: manifest[k] for k in VERSION_FIELDS if k in manifest},
        first=first,
        notes=notes,
    )


def sweep_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of ``results.jsonl``; a line that is no row is a RunError naming it."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"sweep results are unreadable: {path} ({exc})") from None
    rows = []
    for number_, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("point", {}), dict):
            raise RunError(f"sweep results are corrupt: {path} line {number_} is not a row")
        row.setdefault("point", {})
        if not isinstance(row.get("metrics"), dict):
            row["metrics"] = {}
        rows.append(row)
    return rows


def trial_folder(root: Path, run: Any) -> Path | None:
    """A row's folder (``trials/<key>``), only when it lies inside the sweep's folder."""
    if not isinstance(run, str) or not run:
        return None
    relative = Path(run)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    return root / relative


def _names(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []
