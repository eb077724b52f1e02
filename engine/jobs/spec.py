"""One description of a job, checked once, run anywhere.

A :class:`JobSpec` names a job kind (``train``, ``embed``, ``verify``, ``attack``,
``detect``), its plugin and params, the train config or the attacker's budget, the input run
and the output folder. :meth:`JobSpec.validate` makes every check before anything is
written and returns a :class:`CheckedJob`; :meth:`CheckedJob.build` creates the run folder and
gives the job a :class:`~engine.session.Session` runs. The CLI, the playground's forms, the
start screen, scenarios and Python callers all go through here, so no check is written twice
and a refused job never leaves a folder behind.

Job kinds live in :data:`JOB_KINDS`, a registry of the same pattern as the plugins; a kind
knows its plugins (a scheme, an attack, a detector) by registry role, never by type tests.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from engine.data.meta import DatasetMeta
from engine.errors import ConfigError
from engine.registry import Plugin, Registry, parse_params
from engine.runs import RunDir
from engine.session import EventSink, Job, JobContext, Session, StopRequested


def as_path(value: Any) -> Path | None:
    """A run given as a path, a string, or anything with a ``path`` (a finished ``Result``)."""
    if value is None:
        return None
    return Path(getattr(value, "path", value))


@dataclasses.dataclass
class JobSpec:
    """What to run. Build one with the kind's constructor (``JobSpec.train(...)``,
    ``JobSpec.embed("pattern", ...)``, ``JobSpec.attack("ft-basic", run=...)``...) or field
    by field; nothing is checked until :meth:`validate`.

    ``params``, ``config`` (the train config) and ``budget`` take a dataclass or loose values
    (CLI text, TOML, a form); ``source`` is the input run (``--from`` of embed, ``--run`` of
    the others); ``out`` None runs without a folder (tests, quick experiments)."""

    kind: str
    plugin: str = ""
    params: Any = None
    config: Any = None
    budget: Any = None
    source: Path | None = None
    out: Path | None = None
    device: str = "auto"
    eval_every: int = 100
    sweep: tuple[float, ...] | None = None
    #: attack: removal attacks run one after another in this one job (names, or
    #: ``{"attack": NAME, "params": {...}}``); ``plugin`` then names the chain
    chain: Any = None
    key: Path | None = None
    #: verify: a dual-embedding claim (claim.json) instead of a key folder
    claim: Path | None = None
    #: verify: read the key from the model's weights (white-box schemes)
    white_box: bool = False
    alpha: float = 1e-3
    #: attack: the SoK rule's decision threshold and unmarked test accuracy, given instead
    #: of a cached threshold record (fractions)
    threshold: float | None = None
    reference_acc: float | None = None
    data_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    #: the manifest's ``command`` (default: the kind) and keys added to it (a scenario's name)
    command: str = ""
    manifest_extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    # -- constructors: the public Python API's vocabulary ----------------------------------
    @classmethod
    def train(cls, *, out: Any = None, overwrite: bool = False, **config: Any) -> JobSpec:
        """``config``: :class:`~engine.config.TrainConfig` fields (dataset, model, epochs...)."""
        return cls("train", config=config, out=as_path(out), overwrite=overwrite)

    @classmethod
    def resume_run(cls, run: Any, **config: Any) -> JobSpec:
        """Continue ``run`` from its last checkpoint; ``config`` overrides (``epochs``)."""
        path = as_path(run)
        return cls("train", config=config, out=path, source=path, resume=True)

    @classmethod
    def embed(
        cls,
        scheme: str = "pattern",
        *,
        from_run: Any = None,
        out: Any = None,
        overwrite: bool = False,
        params: Any = None,
        config: Any = None,
        **values: Any,
    ) -> JobSpec:
        """``values`` are split by name: train-config fields, the rest scheme params."""
        from engine.config import TrainConfig

        train_names = {f.name for f in dataclasses.fields(TrainConfig)}
        config = loose(config) | {k: v for k, v in values.items() if k in train_names}
        own = loose(params) | {k: v for k, v in values.items() if k not in train_names}
        return cls(
            "embed",
            scheme,
            own,
            config,
            source=as_path(from_run),
            out=as_path(out),
            overwrite=overwrite,
        )

    @classmethod
    def attack(cls, name: str, *, run: Any, **values: Any) -> JobSpec:
        """``values``: ``out``, ``device``, ``eval_every``, ``sweep``, ``overwrite``, and by
        name the attacker-budget fields; the rest are the attack's params."""
        return cls._refereed("attack", name, run, values)

    @classmethod
    def detect(cls, method: str, *, run: Any, **values: Any) -> JobSpec:
        return cls._refereed("detect", method, run, values)

    @classmethod
    def _refereed(cls, kind: str, name: str, run: Any, values: dict[str, Any]) -> JobSpec:
        from engine.attacks.budget import AttackerBudget

        own = {f.name for f in dataclasses.fields(cls)} - {"kind", "plugin", "source"}
        spec_values = {k: values.pop(k) for k in list(values) if k in own - {"params", "budget"}}
        budget_names = {f.name for f in dataclasses.fields(AttackerBudget)}
        budget = loose(values.pop("budget", None))
        params = loose(values.pop("params", None))
        budget |= {k: values.pop(k) for k in list(values) if k in budget_names}
        params |= values
        if "out" in spec_values:
            spec_values["out"] = as_path(spec_values["out"])
        if spec_values.get("sweep") is not None:
            spec_values["sweep"] = tuple(spec_values["sweep"])
        return cls(kind, name, params, budget=budget, source=as_path(run), **spec_values)

    @classmethod
    def verify(
        cls,
        *,
        run: Any,
        key: Any = None,
        claim: Any = None,
        alpha: float = 1e-3,
        device: str = "auto",
        data_dir: str | None = None,
        white_box: bool = False,
    ) -> JobSpec:
        return cls(
            "verify",
            source=as_path(run),
            key=as_path(key),
            claim=as_path(claim),
            white_box=white_box,
            alpha=alpha,
            device=device,
            data_dir=data_dir,
        )

    # -- checking and building ---------------------------------------------------------------
    def job_kind(self) -> JobKind:
        return JOB_KINDS.get(self.kind).factory

    def validate(self, *, inputs: bool = True, data: DatasetMeta | None = None) -> CheckedJob:
        """Every check, nothing written. ``inputs=False`` leaves out what needs the input run
        or the data (a scenario's later phases, whose input is made by an earlier one);
        ``data``, the dataset such a phase will work on, still checks the params against it
        (a label, a trigger, a fraction), as the input run's dataset does when ``inputs``."""
        self.check_out_is_not_source()
        kind = self.job_kind()
        checked = kind.check(self, inputs=inputs)
        if data is None and inputs:
            data = checked.data or kind.dataset(self, checked)
        if data is not None:
            kind.check_data(self, checked, data)
        return checked

    def check_out_is_not_source(self) -> None:
        """A job never writes over the run it reads: ``--overwrite`` would clear its input
        before the job loads it."""
        if self.out is None or self.source is None or self.resume:
            return
        if Path(self.out).resolve() == Path(self.source).resolve():
            raise ConfigError(f"--out {self.out} is the input run itself; choose another --out")

    def build(self) -> BuiltJob:
        """:meth:`validate`, then :meth:`CheckedJob.build`."""
        return self.validate().build()


@dataclasses.dataclass
class CheckedJob:
    """A spec that passed every check, with its values parsed: what to write and to run."""

    spec: JobSpec
    params: Any = None
    config: Any = None
    budget: Any = None
    manifest: dict[str, Any] | None = None
    make: Callable[[RunDir | None], Job] | None = None
    #: the dataset the job was checked against, when its kind already knew it
    data: DatasetMeta | None = None

    def build(self) -> BuiltJob:
        """Create the run folder (when the spec has ``out``) and the job that writes it."""
        assert self.make is not None, "validated with inputs=False: not buildable"
        spec, run = self.spec, None
        if spec.out is not None:
            if spec.resume:
                run = RunDir.open(spec.out)
                if self.manifest is not None:
                    run.write_manifest(self.manifest)
            else:
                assert self.manifest is not None
                run = RunDir.create(spec.out, self.manifest, overwrite=spec.overwrite)
        job = self.make(run)
        return BuiltJob(job if run is None else summarised(job, run), run)


def summarised(job: Job, run: RunDir) -> Job:
    """``job`` that always leaves ``summary.json``: a job stopped or failed before it wrote
    its own (while loading data, generating a key, in a scan's setup) records the status
    and the reason, so a run folder is never left without saying how it ended."""

    def run_and_summarise(ctx: JobContext) -> dict[str, Any]:
        try:
            return job(ctx)
        except StopRequested:
            if not run.summary_written:
                run.write_summary({"status": "stopped"})
            raise
        except BaseException as exc:
            if not run.summary_written:
                first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                run.write_summary({"status": "failed", "error": first_line})
            raise

    return run_and_summarise


@dataclasses.dataclass
class BuiltJob:
    """The job and its run folder (None without ``out``)."""

    job: Job
    run: RunDir | None

    def session(self, sinks: list[EventSink] | None = None) -> Session:
        """A session for the job, recording into the run folder's ``events.jsonl``."""
        own = [self.run.event_sink()] if self.run is not None else []
        return Session(self.job, own + list(sinks or []))


class JobKind:
    """A kind of job: how its spec is checked and what job it builds.

    ``plugin_key`` names the plugin in a scenario phase (``scheme = "pattern"``);
    ``makes_model`` kinds (train, embed) start a model, the others work on an earlier run's;
    ``in_scenarios`` kinds may be scenario phases."""

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    plugin_key: ClassVar[str] = ""
    makes_model: ClassVar[bool] = False
    in_scenarios: ClassVar[bool] = True

    def plugins(self) -> list[Plugin[Any]]:
        return []

    def plugin(self, name: str) -> Plugin[Any]:
        raise ConfigError(f"a {self.name} job takes no plugin (got {name!r})")

    def params_type(self, plugin: str) -> type | None:
        return self.plugin(plugin).params if plugin else None

    def parse_params(self, plugin: str, values: Any) -> Any:
        """The plugin's params from loose values, checked: what a form or a scenario file
        is validated with before the rest of the job exists."""
        if not plugin:
            if values:
                raise ConfigError(f"a {self.name} job takes no params")
            return None
        params_type = self.plugin(plugin).params
        if params_type is None or isinstance(values, params_type):
            return values
        return parse_params(params_type, loose(values))

    def check(self, spec: JobSpec, *, inputs: bool) -> CheckedJob:
        raise NotImplementedError

    def dataset(self, spec: JobSpec, checked: CheckedJob) -> DatasetMeta | None:
        """The dataset the job will load (its classes, shape and sizes), known from the
        catalog or the input run's manifest without loading it; None: nothing to check."""
        return None

    def check_data(self, spec: JobSpec, checked: CheckedJob, data: DatasetMeta) -> None:
        """Refuse what ``data`` cannot take; a kind asks its plugin (``check_data`` of the
        scheme or the attack), so a new plugin declares its own limits."""


JOB_KINDS: Registry[JobKind] = Registry("job kind")


def register_job_kind(cls: type[JobKind]) -> type[JobKind]:
    """Class decorator: one instance of the kind under its ``name``."""
    JOB_KINDS.register(cls.name)(cls())
    return cls


def loose(values: Any) -> dict[str, Any]:
    """Values as a plain dict, whether given as a dataclass, a mapping or nothing."""
    if values is None:
        return {}
    if dataclasses.is_dataclass(values) and not isinstance(values, type):
        return dataclasses.asdict(values)
    if not isinstance(values, Mapping):
        raise ConfigError(f"expected a table of values, got {type(values).__name__}")
    return dict(values)
