"""Scenarios: named pipelines of phases (train or embed, then attacks and scans) from TOML.

A scenario is what a class is shown and what ``wmtui run`` reproduces headless: the same
phases, the same events, one run folder per phase under the scenario's folder. Every phase
is a :class:`~engine.jobs.spec.JobSpec` of a kind in :data:`JOB_KINDS`, checked and built as
the headless command builds it, run on the one session's context: a scenario adds no
training loop and no checks of its own, only the order.

Presets live in ``engine/studies/presets/scenarios/NAME.toml``; ``--scenario FILE`` takes
the user's own.
All names and parameters are validated when the file is read, before anything trains.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine.attacks.budget import AttackerBudget
from engine.config import TrainConfig
from engine.errors import ConfigError, UserError, unknown_name
from engine.jobs.spec import JOB_KINDS, JobKind, JobSpec
from engine.jobs.success import check_fraction
from engine.studies import presets

DEFAULT_SCENARIO = "classic"


def phase_kinds() -> list[str]:
    """The job kinds a scenario phase may be (every registered kind that allows it)."""
    return [p.name for p in JOB_KINDS if p.factory.in_scenarios]


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
    #: an attack phase's ratio sweep (prune, fine-prune): one refereed row per ratio
    sweep: list[float] = dataclasses.field(default_factory=list)
    #: an attack phase's stacked attacks (names or ``{attack, params}`` tables), run in one
    #: refereed job instead of ``plugin`` (:mod:`engine.jobs.chain`)
    chain: list[Any] = dataclasses.field(default_factory=list)
    #: an attack phase's SoK rule numbers instead of the cached threshold record's
    threshold: float | None = None
    reference_acc: float | None = None

    @property
    def job_kind(self) -> JobKind:
        return JOB_KINDS.get(self.kind).factory

    @property
    def makes_model_from_scratch(self) -> bool:
        return self.job_kind.makes_model and not self.from_model

    @property
    def data_free(self) -> bool:
        """A data-free embedding: it makes a model, from an earlier phase's (``on``)."""
        if not (self.plugin and self.job_kind.makes_model):
            return False
        return bool(getattr(self.job_kind.plugin(self.plugin).factory, "data_free", False))

    @property
    def from_model(self) -> bool:
        """An embedding made from an earlier phase's model (``on``): data-free, a scheme
        whose keys come from a trained model (DAWN, frontier, blackmarks), or any embedding
        given ``on``, fine-tuned into that model as ``wmtui embed --from RUN`` does (how
        exponential weighting's paper embeds)."""
        if not (self.plugin and self.job_kind.makes_model):
            return False
        factory = self.job_kind.plugin(self.plugin).factory
        needs_model = bool(getattr(factory, "needs_trained_model", False))
        return self.data_free or needs_model or (self.kind == "embed" and bool(self.on))

    @property
    def from_scratch_only(self) -> bool:
        """An embedding whose key takes hold only while a model first learns (dual)."""
        if not (self.plugin and self.kind == "embed"):
            return False
        return bool(getattr(self.job_kind.plugin(self.plugin).factory, "from_scratch_only", False))

    @property
    def makes_model(self) -> bool:
        return self.job_kind.makes_model

    def params_type(self) -> type | None:
        """The plugin's params dataclass (what the TUI's form is generated from)."""
        return self.job_kind.params_type(self.plugin)

    def parsed_params(self) -> Any:
        if self.chain:  # every step's params, checked as the job checks them
            from engine.jobs.chain import check_steps

            if self.params:
                raise ConfigError("a chain's params go with each step, not with the phase")
            return check_steps(self.chain, self.parsed_budget())
        return self.job_kind.parse_params(self.plugin, self.params)

    def parsed_budget(self) -> AttackerBudget:
        return AttackerBudget.from_mapping(self.budget)

    def job_spec(
        self, config: TrainConfig, source: Path | None, out: Path | None, scenario: str
    ) -> JobSpec:
        """This phase as a job: a new model on the scenario's (and the phase's) train config,
        or work on ``source``'s model within the phase's budget."""
        if self.makes_model:
            return JobSpec(
                self.kind,
                self.plugin,
                dict(self.params),
                {**config.to_dict(), **self.scheme_numerics(config), **self.train},
                source=source if self.from_model else None,
                out=out,
                command=self.kind,
                manifest_extra={"scenario": scenario},
            )
        return JobSpec(
            self.kind,
            self.plugin,
            dict(self.params),
            budget=dict(self.budget),
            source=source,
            out=out,
            device=config.device,
            eval_every=config.eval_every,
            sweep=tuple(self.sweep) or None,
            chain=list(self.chain) or None,
            threshold=self.threshold,
            reference_acc=self.reference_acc,
        )

    def scheme_numerics(self, config: TrainConfig) -> dict[str, Any]:
        """The scheme's own training values (dual: Adam 1e-3, clip 5) where the scenario
        left the train config at its defaults: a scenario's one [train] table serves
        every phase, so it cannot leave a key out for one scheme."""
        if not self.plugin:
            return {}
        wanted = getattr(self.job_kind.plugin(self.plugin).factory, "train_defaults", {})
        defaults = TrainConfig().to_dict()
        given = config.to_dict()
        return {k: v for k, v in wanted.items() if given.get(k) == defaults.get(k)}

    def label(self) -> str:
        plugin = self.plugin or ",".join(_step_name(step) for step in self.chain)
        what = f"{self.kind} {plugin}".strip()
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
    return presets.preset_names("scenario")


def scenario_source(name_or_file: str) -> presets.Source:
    """The TOML a ``--scenario`` value means (the one rule of :mod:`engine.studies.presets`)."""
    return presets.resolve("scenario", name_or_file)


def load_scenario(name_or_file: str) -> Scenario:
    """A preset by name, or a TOML file by path; every phase is validated here."""
    source = scenario_source(name_or_file)
    return scenario_from_mapping(source.read(), name=source.name, source=str(source))


def scenario_from_mapping(raw: Mapping[str, Any], name: str, source: str = "") -> Scenario:
    """A validated scenario; every message names the file (``source``) and the table, since a
    user fixing a typo needs to know where it is, not which class read it."""
    origin = source or f"scenario {name}"
    known = {"title", "description", "train", "phases"}
    for key in raw:
        if key not in known:
            raise _located(origin, unknown_name("key", key, sorted(known)))
    phases_raw = raw.get("phases")
    if not isinstance(phases_raw, list) or not phases_raw:
        raise ConfigError(f"{origin}: needs at least one [[phases]] table")
    train = _table(raw.get("train", {}), f"{origin} [train]")
    _checked(lambda: TrainConfig.from_mapping(train), f"{origin} [train]")  # typos fail now
    phases: list[PhaseSpec] = []
    for index, item in enumerate(phases_raw, 1):
        phases.append(_checked_phase(item, index, phases, origin))
    scenario = Scenario(
        name=name,
        title=str(raw.get("title", name)),
        description=str(raw.get("description", "")).strip(),
        train=train,
        phases=phases,
        source=source,
    )
    for spec in phases:
        _checked_config(scenario, spec.train)
    return scenario


#: phases already checked, by their table and the earlier phases they may refer to: a recipe's
#: grid builds the same train, embed and attack phase in hundreds of trials (sok: 1,404), and
#: checking each once makes reading it seconds rather than a minute
_CHECKED: dict[str, PhaseSpec] = {}


def _checked_phase(item: Any, index: int, earlier: list[PhaseSpec], origin: str) -> PhaseSpec:
    """:func:`_phase_from_mapping`, once per distinct phase (an error is never remembered)."""
    try:
        context = [(p.name, p.kind, p.plugin, p.makes_model) for p in earlier]
        key = json.dumps([item, index, context], sort_keys=True)
    except (TypeError, ValueError):  # not plain TOML values: check it every time
        return _phase_from_mapping(item, index, earlier, origin)
    if key not in _CHECKED:
        if len(_CHECKED) > 4096:
            _CHECKED.clear()
        _CHECKED[key] = _phase_from_mapping(item, index, earlier, origin)
    done = _CHECKED[key]  # a copy: a phase's tables are edited in place (the playground's form)
    return dataclasses.replace(
        done,
        params=copy.deepcopy(done.params),
        budget=dict(done.budget),
        train=dict(done.train),
        sweep=list(done.sweep),
        chain=copy.deepcopy(done.chain),
    )


_CONFIGS: set[str] = set()


def _checked_config(scenario: Scenario, overrides: dict[str, Any]) -> None:
    """``scenario.config(overrides)`` builds (it raises on a bad value), checked once per
    distinct pair of tables."""
    try:
        key = json.dumps([scenario.train, overrides], sort_keys=True)
    except (TypeError, ValueError):
        scenario.config(overrides)
        return
    if key not in _CONFIGS:
        scenario.config(overrides)
        if len(_CONFIGS) > 4096:
            _CONFIGS.clear()
        _CONFIGS.add(key)


def _phase_from_mapping(item: Any, index: int, earlier: list[PhaseSpec], origin: str) -> PhaseSpec:
    """One ``[[phases]]`` table, checked; errors read ``FILE [[phases]] NAME: ...`` (the
    phase's position when it has no name yet)."""
    where = f"{origin} [[phases]] #{index}"
    if not isinstance(item, Mapping):
        raise ConfigError(f"{where}: must be a table")
    if isinstance(item.get("name"), str) and item["name"]:
        where = f"{origin} [[phases]] {item['name']}"
    kind = str(item.get("kind", ""))
    kinds = phase_kinds()
    if kind not in kinds:
        raise _located(where, unknown_name("kind", kind, kinds))
    plugin_key = JOB_KINDS.get(kind).factory.plugin_key
    allowed = {"name", "kind", "title", "params", "budget", "on", "train", "sweep"} | (
        {plugin_key} if plugin_key else set()
    )
    allowed |= {"chain", "threshold", "reference_acc"} if kind == "attack" else set()
    for key in item:
        if key not in allowed:
            raise _located(where, unknown_name("key", key, sorted(allowed)))
    plugin = str(item.get(plugin_key, "")) if plugin_key else ""
    chain_label, chain = _chain(item, where)
    if chain and plugin:
        raise ConfigError(f"{where}: give {plugin_key} = ... or chain = [...], not both")
    if plugin_key and not plugin and not chain:
        raise ConfigError(f'{where}: a {kind} phase needs {plugin_key} = "..."')
    if plugin:
        _checked(lambda: JOB_KINDS.get(kind).factory.plugin(plugin), where)
    name = str(item.get("name", plugin or chain_label or ("chain" if chain else kind)))
    if any(p.name == name for p in earlier):
        raise ConfigError(f"{where}: phase name {name!r} is used twice")
    where = f"{origin} [[phases]] {name}"
    spec = PhaseSpec(
        name=name,
        kind=kind,
        plugin=plugin,
        params=_table(item.get("params", {}), f"{where} params"),
        budget=_table(item.get("budget", {}), f"{where} budget"),
        on=str(item.get("on", "")),
        title=str(item.get("title", "")),
        train=_table(item.get("train", {}), f"{where} train"),
        sweep=_ratios(item.get("sweep", []), f"{where} sweep"),
        chain=chain,
        threshold=_checked_value(lambda: check_fraction("threshold", item.get("threshold")), where),
        reference_acc=_checked_value(
            lambda: check_fraction("reference_acc", item.get("reference_acc")), where
        ),
    )
    if spec.sweep and spec.kind != "attack":
        raise ConfigError(f"{where}: only attack phases take a 'sweep'")
    _checked(lambda: spec.data_free, where)  # an unknown scheme is named here
    if spec.makes_model_from_scratch and (spec.on or spec.budget):
        raise ConfigError(f"{where}: a {kind} phase takes no 'on' or 'budget'")
    if spec.on and spec.from_scratch_only:  # the scheme's name was checked just above
        raise ConfigError(f"{where}: {spec.plugin} embeds only while a model first learns")
    if spec.data_free and spec.budget:
        raise ConfigError(f"{where}: a data-free embed phase takes no 'budget'")
    if spec.makes_model:
        _checked(lambda: TrainConfig.from_mapping(spec.train), f"{where} train")
    if not spec.makes_model_from_scratch:
        if spec.train and not spec.data_free:
            raise ConfigError(f"{where}: only train/embed phases take [train] overrides")
        spec.on = spec.on or _latest_model(earlier, where)
        if spec.on not in [p.name for p in earlier]:
            raise _located(where, unknown_name("'on' phase", spec.on, [p.name for p in earlier]))
        if not spec.data_free:
            _checked(spec.parsed_budget, f"{where} budget")
    _checked(spec.parsed_params, f"{where} params ({spec.plugin or kind})")
    return spec


def _chain(item: Mapping[str, Any], where: str) -> tuple[str, list[Any]]:
    """An attack phase's ``chain``: a preset's name (its steps), or the steps themselves;
    whether they are attacks with valid params is checked with the phase's params."""
    if "chain" not in item:
        return "", []
    from engine.studies.chains import expand_chain

    label, steps = _checked_value(lambda: expand_chain(item["chain"]), f"{where} chain")
    if item.get("sweep"):
        raise ConfigError(f"{where}: a chain takes no 'sweep' (sweep one attack in its own phase)")
    return label, steps


def _step_name(step: Any) -> str:
    return str(step.get("attack", "?")) if isinstance(step, Mapping) else str(step)


def _checked_value(check: Callable[[], Any], where: str) -> Any:
    """:func:`_checked` for a check that returns what it read."""
    try:
        return check()
    except UserError as exc:
        raise _located(where, exc) from None


def _located(where: str, exc: UserError) -> ConfigError:
    """``exc`` prefixed with where in the file it comes from."""
    return ConfigError(f"{where}: {exc}")


def _checked(check: Callable[[], Any], where: str) -> None:
    """Run a validation; its error line gets ``where`` in front."""
    try:
        check()
    except UserError as exc:
        raise _located(where, exc) from None


def _ratios(value: Any, where: str) -> list[float]:
    """A list of ratios in [0, 1) (what ``--sweep`` takes), or one clear line."""
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < 1 for v in value
    ):
        raise ConfigError(f"{where}: must be a list of ratios in [0, 1), got {value!r}")
    return [float(v) for v in value]


def _table(value: Any, where: str) -> dict[str, Any]:
    """A TOML table as a dict; a scalar or a list where a table belongs is one clear line."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a table (key = value lines), got {value!r}")
    return dict(value)


def _latest_model(earlier: list[PhaseSpec], where: str) -> str:
    for spec in reversed(earlier):
        if spec.makes_model:
            return spec.name
    raise ConfigError(f"{where}: no earlier train/embed phase to work on (give on = ...)")
