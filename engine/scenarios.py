"""Scenarios: named pipelines of phases (train or embed, then attacks and scans) from TOML.

A scenario is what a class is shown and what ``wmtui run`` reproduces headless: the same
phases, the same events, one run folder per phase under the scenario's folder. Every phase
is an existing job (``train_job``, ``embed_job``, ``attack_job``, ``detect_job``) run on the
one session's context, so a scenario adds no training loop, only the order.

Presets live in ``assets/scenarios/NAME.toml``; ``--scenario FILE`` takes the user's own.
All names and parameters are validated when the file is read, before anything trains.
"""

from __future__ import annotations

import dataclasses
import time
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine import commands as cmd
from engine.attacks import ATTACKS, AttackerBudget, attack_job, attack_manifest, detect_job
from engine.attacks.detection import Detector, detect_manifest
from engine.config import TrainConfig
from engine.errors import ConfigError, RunError, UserError, unknown_name
from engine.events import Event, Phase
from engine.jobs import embed_job, new_run_manifest, train_job
from engine.registry import parse_params
from engine.runs import RunDir
from engine.session import Job, JobContext, StopRequested
from engine.watermarks import SCHEMES, parse_scheme_params

SCENARIO_DIR = Path(__file__).resolve().parents[1] / "assets" / "scenarios"
DEFAULT_SCENARIO = "classic"
PHASE_KINDS = ("train", "embed", "attack", "detect")
#: the TOML key naming a phase's plugin, per kind
PLUGIN_KEY = {"embed": "scheme", "attack": "attack", "detect": "method"}


@dataclasses.dataclass
class PhaseSpec:
    """One step of a scenario. ``on`` names the earlier phase whose saved model an attack or
    scan works on (default: the latest train/embed phase)."""

    name: str
    kind: str
    plugin: str = ""
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    budget: dict[str, Any] = dataclasses.field(default_factory=dict)
    on: str = ""
    title: str = ""
    train: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def makes_model_from_scratch(self) -> bool:
        return self.kind in ("train", "embed")

    def params_type(self) -> type | None:
        """The plugin's params dataclass (what the TUI's form is generated from)."""
        if self.kind == "embed":
            return SCHEMES.get(self.plugin).params
        if self.kind in ("attack", "detect"):
            return ATTACKS.get(self.plugin).params
        return None

    def parsed_params(self) -> Any:
        if self.kind == "embed":
            return parse_scheme_params(self.plugin, self.params)
        if self.kind in ("attack", "detect"):
            params_type = ATTACKS.get(self.plugin).params
            assert params_type is not None
            return parse_params(params_type, self.params)
        if self.params:
            raise ConfigError(f"phase {self.name!r}: a train phase takes no params")
        return None

    def parsed_budget(self) -> AttackerBudget:
        return AttackerBudget.from_mapping(self.budget)

    def label(self) -> str:
        what = f"{self.kind} {self.plugin}".strip()
        return what if self.name in (self.plugin, self.kind) else f"{self.name} ({what})"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Scenario:
    name: str
    title: str
    description: str
    train: dict[str, Any]
    phases: list[PhaseSpec]
    source: str = ""

    def config(self, overrides: Mapping[str, Any] | None = None) -> TrainConfig:
        """The scenario's training setup with the user's flags on top."""
        return TrainConfig.from_mapping({**self.train, **(overrides or {})})

    def phase(self, name: str) -> PhaseSpec:
        for spec in self.phases:
            if spec.name == name:
                return spec
        raise unknown_name("phase", name, [p.name for p in self.phases])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "train": self.train,
            "phases": [p.to_dict() for p in self.phases],
            "source": self.source,
        }


# -- reading ------------------------------------------------------------------------------
def preset_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


def load_scenario(name_or_file: str) -> Scenario:
    """A preset by name, or a TOML file by path; every phase is validated here."""
    path = Path(name_or_file)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"scenario file not found: {path}")
    else:
        presets = preset_names()
        if name_or_file not in presets:
            raise unknown_name("scenario", name_or_file, presets)
        path = SCENARIO_DIR / f"{name_or_file}.toml"
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read scenario {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"scenario {path} is not valid TOML: {exc}") from None
    return scenario_from_mapping(raw, name=path.stem, source=str(path))


def scenario_from_mapping(raw: Mapping[str, Any], name: str, source: str = "") -> Scenario:
    known = {"title", "description", "train", "phases"}
    for key in raw:
        if key not in known:
            raise unknown_name(f"scenario {name}: key", key, sorted(known))
    phases_raw = raw.get("phases")
    if not isinstance(phases_raw, list) or not phases_raw:
        raise ConfigError(f"scenario {name}: needs at least one [[phases]] table")
    train = dict(raw.get("train", {}))
    TrainConfig.from_mapping(train)  # validate now: a typo fails before anything runs
    phases: list[PhaseSpec] = []
    for index, item in enumerate(phases_raw, 1):
        phases.append(_phase_from_mapping(item, index, phases, name))
    scenario = Scenario(
        name=name,
        title=str(raw.get("title", name)),
        description=str(raw.get("description", "")).strip(),
        train=train,
        phases=phases,
        source=source,
    )
    for spec in phases:
        scenario.config(spec.train)
    return scenario


def _phase_from_mapping(
    item: Any, index: int, earlier: list[PhaseSpec], scenario: str
) -> PhaseSpec:
    where = f"scenario {scenario}, phase {index}"
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: must be a table")
    kind = str(item.get("kind", ""))
    if kind not in PHASE_KINDS:
        raise unknown_name(f"{where}: kind", kind, list(PHASE_KINDS))
    plugin_key = PLUGIN_KEY.get(kind)
    allowed = {"name", "kind", "title", "params", "budget", "on", "train"} | (
        {plugin_key} if plugin_key else set()
    )
    for key in item:
        if key not in allowed:
            raise unknown_name(f"{where}: key", key, sorted(allowed))
    plugin = str(item.get(plugin_key, "")) if plugin_key else ""
    if plugin_key and not plugin:
        raise ConfigError(f'{where}: a {kind} phase needs {plugin_key} = "..."')
    if kind == "embed":
        SCHEMES.get(plugin)
    elif kind in ("attack", "detect"):
        factory = ATTACKS.get(plugin).factory
        is_detector = isinstance(factory, type) and issubclass(factory, Detector)
        if is_detector != (kind == "detect"):
            other = "detect" if is_detector else "attack"
            raise ConfigError(f"{where}: {plugin!r} is a {other} phase, not {kind}")
    name = str(item.get("name", plugin or kind))
    if any(p.name == name for p in earlier):
        raise ConfigError(f"{where}: phase name {name!r} is used twice")
    spec = PhaseSpec(
        name=name,
        kind=kind,
        plugin=plugin,
        params=dict(item.get("params", {})),
        budget=dict(item.get("budget", {})),
        on=str(item.get("on", "")),
        title=str(item.get("title", "")),
        train=dict(item.get("train", {})),
    )
    if spec.makes_model_from_scratch and (spec.on or spec.budget):
        raise ConfigError(f"{where}: a {kind} phase takes no 'on' or 'budget'")
    if not spec.makes_model_from_scratch:
        if spec.train:
            raise ConfigError(f"{where}: only train/embed phases take [train] overrides")
        spec.on = spec.on or _latest_model(earlier, where)
        if spec.on not in [p.name for p in earlier]:
            raise unknown_name(f"{where}: 'on' phase", spec.on, [p.name for p in earlier])
        spec.parsed_budget()
    try:
        spec.parsed_params()
    except UserError as exc:
        raise ConfigError(f"{where} ({spec.plugin or kind}): {exc}") from None
    return spec


def _latest_model(earlier: list[PhaseSpec], where: str) -> str:
    for spec in reversed(earlier):
        if spec.makes_model_from_scratch:
            return spec.name
    raise ConfigError(f"{where}: no earlier train/embed phase to work on (give on = ...)")


# -- running ------------------------------------------------------------------------------
class PhaseRouter:
    """The session sink that also records each event into the current phase's run folder."""

    def __init__(self) -> None:
        self.current: Callable[[Event], None] | None = None

    def __call__(self, event: Event) -> None:
        if self.current is not None:
            self.current(event)


def phase_folder(root: Path, index: int, spec: PhaseSpec) -> Path:
    return root / f"{index:02d}-{spec.name}"


def scenario_manifest(scenario: Scenario, config: TrainConfig) -> dict[str, Any]:
    return {"command": "scenario", "scenario": scenario.to_dict(), "config": config.to_dict()}


def prepare_scenario(
    scenario: Scenario, config: TrainConfig, out: Path
) -> tuple[Job, RunDir, list[Callable[[Event], None]]]:
    """The job, its root run folder and the sinks a session for it needs (the root's
    ``events.jsonl`` is the caller's, the router for the phases' is in the list)."""
    root = RunDir.create(out, scenario_manifest(scenario, config))
    router = PhaseRouter()
    return scenario_job(scenario, config, root, router), root, [router]


def scenario_job(
    scenario: Scenario,
    config: TrainConfig,
    root: RunDir,
    router: PhaseRouter,
) -> Job:
    """Run the phases in order on one context; ``SkipPhase`` ends the current one early (its
    model is kept, as with Stop) and goes on; ``SetPhaseParams`` edits a phase not yet begun.

    ``root`` holds the whole stream (``events.jsonl``), the manifest and ``summary.json``;
    each phase writes its own run folder ``NN-name/`` exactly as the headless command would.
    """

    def job(ctx: JobContext) -> dict[str, Any]:
        started = time.monotonic()
        summary: dict[str, Any] = {"scenario": scenario.name, "run": str(root.path), "phases": []}
        ctx.log(f"scenario {scenario.name}: {scenario.title}")
        try:
            _run_phases(ctx, scenario, config, root, router, summary["phases"])
            summary["status"] = "completed"
        except StopRequested:
            summary["status"] = "stopped"
            raise
        except BaseException as exc:
            summary |= {"status": "failed", "error": str(exc).splitlines()[0] if str(exc) else ""}
            raise
        finally:  # a stopped or failed scenario still says how far it got
            summary["seconds"] = round(time.monotonic() - started, 2)
            root.write_summary(summary)
        return summary

    return job


def _run_phases(
    ctx: JobContext,
    scenario: Scenario,
    config: TrainConfig,
    root: RunDir,
    router: PhaseRouter,
    results: list[dict[str, Any]],
) -> None:
    total = len(scenario.phases)
    folders: dict[str, Path] = {}
    for index, spec in enumerate(scenario.phases, 1):
        ctx.reset_handlers()
        ctx.skippable = index < total
        ctx.on(cmd.SetPhaseParams, _phase_editor(scenario, index))
        folder = phase_folder(root.path, index, spec)
        info = {
            "scenario": scenario.name,
            "title": spec.title or spec.label(),
            "kind": spec.kind,
            "plugin": spec.plugin,
            "run": str(folder),
        }
        entry = {"name": spec.name, "kind": spec.kind, "plugin": spec.plugin, "run": str(folder)}
        ctx.emit(Phase(spec.name, "start", index=index, total=total, info=info))
        phase_job, run = _build_phase(spec, config, scenario, folder, folders)
        sink = run.event_sink()
        router.current = sink
        result: dict[str, Any] = {}
        try:
            result = phase_job(ctx) or {}
            entry["status"] = "completed"
        except StopRequested:
            if not ctx.skip_requested:
                results.append({**entry, "status": "stopped"})
                raise
            ctx.skip_requested = ctx.stop_requested = False
            entry["status"] = "skipped"
        except BaseException:
            results.append({**entry, "status": "failed"})
            raise
        finally:
            router.current = None
            sink.close()
        folders[spec.name] = folder
        entry |= {k: result[k] for k in _HEADLINE if k in result}
        results.append(entry)
        ctx.emit(Phase(spec.name, "end", index=index, total=total, info={**info, **entry}))


#: what a phase's summary contributes to the scenario's
_HEADLINE = (
    "test_acc",
    "retention",
    "test_acc_before",
    "retention_before",
    "flagged_class",
    "anomaly_index",
    "perturbation_sizes",
    "verified",
)


def _phase_editor(scenario: Scenario, current: int) -> Callable[[cmd.SetPhaseParams], str]:
    def edit(command: cmd.SetPhaseParams) -> str:
        names = [p.name for p in scenario.phases]
        spec = scenario.phase(command.phase)
        position = names.index(spec.name) + 1
        if position <= current:
            raise ConfigError(f"phase {spec.name!r} has already started")
        field = "budget" if command.budget else "params"
        candidate = dataclasses.replace(spec, **{field: {**getattr(spec, field), **command.values}})
        candidate.parsed_params()
        candidate.parsed_budget()
        setattr(spec, field, getattr(candidate, field))
        shown = ", ".join(f"{k}={v}" for k, v in command.values.items())
        return f"phase {spec.name}: {field} set ({shown})"

    return edit


def _build_phase(
    spec: PhaseSpec,
    config: TrainConfig,
    scenario: Scenario,
    folder: Path,
    done: dict[str, Path],
) -> tuple[Job, RunDir]:
    """The existing job for this phase and its run folder (created now, not at load: an
    attack's manifest reads the run it attacks, which exists only once that phase ran)."""
    if spec.makes_model_from_scratch:
        phase_config = scenario.config({**config.to_dict(), **spec.train}) if spec.train else config
        manifest = new_run_manifest(phase_config, spec.kind) | {"scenario": scenario.name}
        if spec.kind == "embed":
            params = spec.parsed_params()
            manifest |= {"scheme": spec.plugin, "scheme_params": dataclasses.asdict(params)}
            run = RunDir.create(folder, manifest)
            return embed_job(phase_config, spec.plugin, params, run), run
        run = RunDir.create(folder, manifest)
        return train_job(phase_config, run), run
    source = done.get(spec.on)
    if source is None or not (source / "model.safetensors").is_file():
        raise RunError(f"phase {spec.name}: phase {spec.on!r} left no model to work on")
    params, budget = spec.parsed_params(), spec.parsed_budget()
    if spec.kind == "detect":
        manifest = detect_manifest(source, spec.plugin, params, budget)
        run = RunDir.create(folder, manifest)
        return detect_job(source, spec.plugin, params, budget, run, device=config.device), run
    manifest = attack_manifest(source, spec.plugin, params, budget)
    run = RunDir.create(folder, manifest)
    return attack_job(source, spec.plugin, params, budget, run, device=config.device), run
