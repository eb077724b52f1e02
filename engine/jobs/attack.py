"""The ``attack`` job: a removal attack on a run's model within an explicit budget, refereed.

Input errors (unknown attack, bad params, a budget the attack cannot use, a missing run, bad
sweep ratios) are found by :func:`check_attack`, before anything is created or loaded; the
job emits ``Phase`` and the loop's ``Metrics`` (retention per key probe) and returns the
summary: before/after ``test_acc`` and ``retention`` (also written to ``out/summary.json``).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from engine.attacks.budget import NOISE, AttackerBudget
from engine.attacks.queries import QueryBudgetSpent, QueryCounter
from engine.attacks.registry import (
    ATTACKS,
    EXTRACTION,
    REMOVAL,
    Attack,
    AttackEnv,
    make_attack,
)
from engine.data.meta import DatasetMeta, dataset_meta
from engine.errors import ConfigError
from engine.events import json_safe
from engine.jobs.api_watermark import recording_thief, thief_marks
from engine.jobs.chain import check_chain_data, check_chain_job, is_chained
from engine.jobs.common import derived_manifest, resolve_device
from engine.jobs.judges import removal_judge
from engine.jobs.referee import (
    ProbesFor,
    Suspect,
    check_eval_every,
    checked_plugin,
    default_probes,
    describe_scores,
    parsed_budget,
    referee_claims,
    referee_scores,
    referee_trainer,
    refereed_job,
    require_run_dataset,
    run_dataset,
    white_box_marks,
)
from engine.jobs.spec import CheckedJob, JobKind, JobSpec, loose, register_job_kind
from engine.jobs.success import SoKJudge, check_fraction, cost
from engine.jobs.white_box_verdict import WeightMark, WhiteBoxJudge
from engine.metrics import Probe
from engine.registry import Plugin, parse_params
from engine.runs import RunDir
from engine.session import Job, JobContext


def sweep_params(attack: Attack[Any], ratios: Sequence[float]) -> list[Any]:
    """One params object per ratio, each validated against the attack's ratio bounds."""
    if not any(f.name == "ratio" for f in dataclasses.fields(attack.params)):
        raise ConfigError("--sweep needs an attack with a ratio (prune, fine-prune)")
    if not ratios:
        raise ConfigError("--sweep needs at least one ratio")
    base = dataclasses.asdict(attack.params)
    return [parse_params(type(attack.params), {**base, "ratio": r}) for r in ratios]


def attack_manifest(
    run_dir_in: Path,
    attack_name: str,
    params: Any,
    budget: AttackerBudget,
    sweep: Sequence[float] | None = None,
) -> dict[str, Any]:
    """Manifest of the attacked run: everything the attacker was given."""
    return derived_manifest(
        run_dir_in,
        "attack",
        {
            "name": attack_name,
            "params": dataclasses.asdict(params),
            "budget": budget.to_dict(),
            "sweep": list(sweep) if sweep else None,
        },
    )


@dataclasses.dataclass
class CheckedAttack:
    """An attack whose every input was checked (:func:`check_attack`); :meth:`job` makes
    what a session runs, so the checks and the job are one object, never two calls that must
    be given the same arguments."""

    name: str
    attack: Attack[Any]
    variants: list[Any] | None
    run: RunDir
    budget: AttackerBudget
    device: str
    eval_every: int
    #: the user's decision threshold and unmarked test accuracy (None: the cached record's)
    threshold: float | None = None
    reference_acc: float | None = None

    def job(self, out_run: RunDir | None, probes_for: ProbesFor | None = None) -> Job:
        """Attack the run's model within the budget; write ``out_run``."""
        attack, variants, run, budget = self.attack, self.variants, self.run, self.budget
        attack_name, device, eval_every = self.name, self.device, self.eval_every
        probes_for = probes_for or default_probes(run.path)
        probes: list[Probe] = []

        def head(suspect: Suspect) -> dict[str, Any]:
            return {"attack": attack_name, "params": dataclasses.asdict(attack.params)}

        def start_info(suspect: Suspect) -> dict[str, Any]:
            return {
                "attack": attack_name,
                "data_fraction": budget.data_fraction,
                "steps": attack.planned_steps(suspect.attacker)
                * (len(variants) if variants else 1),
                "source_run": str(run.path),
                "dataset": suspect.data.name,
                "unlabeled": budget.unlabeled,
                "query_cap": budget.queries,
                "labeled_images": len(suspect.attacker.labeled_x),
                "device": str(suspect.device),
            }

        def work(ctx: JobContext, suspect: Suspect, summary: dict[str, Any]) -> None:
            probes.extend(probes_for(suspect.data, suspect.device))
            marks = white_box_marks(run.path, suspect.data)  # keys read from the weights
            if len(probes) == 1 and not marks:
                ctx.log("no key probes for this run: retention is not measured", "warning")
            before = referee_scores(suspect.model, probes, marks)
            summary |= {
                "labeled_images": len(suspect.attacker.labeled_x),
                "unlabeled_images": len(suspect.attacker.unlabeled_x),
                "before": before,
            }
            ctx.log(f"before the attack: {describe_scores(before)}")
            queries = QueryCounter(budget.queries)
            trainer = referee_trainer(ctx, attack_name, probes, eval_every, suspect.seed, queries)
            env = AttackEnv(
                ctx, suspect.device, suspect.seed, trainer, track=probes.extend, queries=queries
            )
            names = (suspect.data.name, suspect.arch.name)
            extraction = ATTACKS.get(attack_name).family == EXTRACTION
            sok = removal_judge(
                run.path,
                names,
                before,
                marks,
                self.threshold,
                self.reference_acc,
                extraction=extraction,
            )
            started = time.monotonic()
            if variants is not None:
                summary |= _sweep(ctx, variants, attack, suspect, env, (probes, marks), sok)
                summary["cost"] = attack_cost(started, suspect, env)
                return
            try:
                with recording_thief(suspect.model, attack_name):  # an API that remembers
                    result = attack.run(suspect.model, suspect.arch, suspect.attacker, env)
            except QueryBudgetSpent as exc:
                summary |= {"cost": attack_cost(started, suspect, env), "reason": str(exc)}
                ctx.log(f"{attack_name} stopped: {exc}", "warning")
                raise
            result = thief_marks(
                ctx, suspect.model, result, probes, suspect.data, run.path, out_run
            )
            summary["cost"] = attack_cost(started, suspect, env)
            after = referee_scores(result.model, probes, marks)
            summary |= {
                "after": after,
                "test_acc": after["test_acc"],
                "retention": after["retention"],
                "test_acc_before": before["test_acc"],
                "retention_before": before["retention"],
                "steps": result.steps,
                "model": result.arch.name,
                "info": json_safe(result.info),
                **sok.judge(after),
            }
            if out_run is not None:
                out_run.save_model(result.model, result.arch)
            ctx.log(f"after the attack: {describe_scores(after)}")
            if result.claims:
                summary |= referee_claims(ctx, result, suspect, out_run)

        return refereed_job(
            run,
            budget,
            out_run,
            phase=attack_name,
            device=device,
            head=head,
            start_info=start_info,
            work=work,
            end_info=lambda summary: {
                key: summary.get(key)
                for key in ("test_acc", "removed", "kept_accuracy", "wm_accuracy", "threshold")
            },
        )


def attack_cost(started: float, suspect: Suspect, env: AttackEnv) -> dict[str, Any]:
    """The attack's wall time since ``started``, the attacker images and labels it drew on,
    and the answers it asked of the suspect (``env.queries``)."""
    images, labels = suspect.attacker.images_used()
    return cost(time.monotonic() - started, images, labels, env.queries.count)


def check_attack(
    run_dir_in: str | Path,
    attack_name: str,
    params: Any,
    budget: AttackerBudget,
    *,
    device: str = "auto",
    eval_every: int = 100,
    sweep: Sequence[float] | None = None,
    role: str | None = None,
    threshold: float | None = None,
    reference_acc: float | None = None,
) -> CheckedAttack:
    """Every input check of an attack, before anything is written or loaded."""
    attack = checked_plugin(attack_name, params, budget, role)
    threshold = check_fraction("--threshold", threshold)
    reference_acc = check_fraction("--reference-acc", reference_acc)
    variants = sweep_params(attack, sweep) if sweep is not None else None
    check_eval_every(eval_every)
    run = RunDir.open(run_dir_in)
    resolve_device(device)
    require_run_dataset(run)
    return CheckedAttack(
        attack_name, attack, variants, run, budget, device, eval_every, threshold, reference_acc
    )


def _sweep(
    ctx: JobContext,
    variants: list[Any],
    attack: Attack[Any],
    suspect: Suspect,
    env: AttackEnv,
    referee: tuple[list[Probe], list[WeightMark]],
    sok: SoKJudge | WhiteBoxJudge,
) -> dict[str, Any]:
    """Run the attack once per ratio on a fresh copy of the suspect; the referee scores each
    (``referee``: the probes, and the white-box keys read from the weights) and the SoK rule
    judges each (for a white-box key on its BER: ``ber``, ``bits``, ``p_value`` per row)."""
    probes, marks = referee
    rows = []
    for params in variants:
        fresh = type(attack)(params)
        result = fresh.run(copy.deepcopy(suspect.model), suspect.arch, suspect.attacker, env)
        scores = referee_scores(result.model, probes, marks)
        row = {
            "ratio": params.ratio,
            "sparsity": result.info.get("sparsity"),
            # what the ratio removed: units for neuron pruning, weights otherwise
            "pruned": result.info.get("unit_fraction", result.info.get("sparsity")),
            "test_acc": scores["test_acc"],
            "retention": scores["retention"],
        }
        verdict = sok.judge(scores)
        row |= {k: verdict[k] for k in ("removed", "kept_accuracy", "wm_accuracy", "why")}
        row |= {k: verdict[k] for k in ("ber", "bits", "p_value") if k in verdict}
        rows.append(row)
        ctx.log(f"ratio {params.ratio:g}: {describe_scores(scores)}")
    return {"sweep": rows, "threshold": sok.threshold, "reference_test_acc": sok.reference_test_acc}


class RefereedKind(JobKind):
    """What the attack and detect kinds share: plugins of one role of :data:`ATTACKS`, the
    budget, and the input run; ``check_inputs`` adds what needs that run."""

    role: ClassVar[str] = ""
    missing_run: ClassVar[str] = ""

    def plugins(self) -> list[Plugin[Any]]:
        return ATTACKS.select(self.role)

    def parse_params(self, plugin: str, values: Any) -> Any:
        self.plugin(plugin)
        return make_attack(plugin, values, role=self.role).params

    def check(self, spec: JobSpec, *, inputs: bool) -> CheckedJob:
        self.plugin(spec.plugin)
        budget = parsed_budget(spec.budget)
        check_fraction("--threshold", spec.threshold)
        check_fraction("--reference-acc", spec.reference_acc)
        if not inputs:
            plugin = checked_plugin(spec.plugin, spec.params, budget, self.role)
            return CheckedJob(spec, params=plugin.params, budget=budget)
        if spec.source is None:
            raise ConfigError(self.missing_run)
        return self.check_inputs(spec, spec.source, budget)

    def check_inputs(self, spec: JobSpec, source: Path, budget: AttackerBudget) -> CheckedJob:
        raise NotImplementedError

    def dataset(self, spec: JobSpec, checked: CheckedJob) -> DatasetMeta | None:
        assert spec.source is not None
        return run_dataset(RunDir.open(spec.source))

    def check_data(self, spec: JobSpec, checked: CheckedJob, data: DatasetMeta) -> None:
        """A labelled fraction that selects at least one image (said in the user's own
        numbers), then the plugin's own limits."""
        budget = checked.budget
        assert isinstance(budget, AttackerBudget)
        if budget.data_fraction > 0:
            budget_given = loose(spec.budget) if not isinstance(spec.budget, AttackerBudget) else {}
            data.check_selects(budget.data_fraction, "data-fraction", "image", budget_given)
        if budget.unlabeled:
            check_unlabeled(budget.unlabeled, data)
        self.check_plugin_data(spec, checked, data, budget)

    def check_plugin_data(
        self, spec: JobSpec, checked: CheckedJob, data: DatasetMeta, budget: AttackerBudget
    ) -> None:
        """The plugin's own limits on ``data`` (a chain's: every step's)."""
        given = spec.params if isinstance(spec.params, Mapping) else {}
        make_attack(spec.plugin, checked.params, role=self.role).check_data(data, budget, given)


def check_unlabeled(name: str, data: DatasetMeta) -> None:
    """The unlabelled source's images convert to the suspect's input (grey and RGB do into
    each other; other channel counts do not). Noise is made in the suspect's own shape."""
    if name == NOISE:
        return
    channels, wanted = dataset_meta(name, data.data_dir).shape[0], data.shape[0]
    if channels != wanted and not {channels, wanted} <= {1, 3}:
        raise ConfigError(
            f"--unlabeled {name}: its {channels}-channel images cannot be given to a model "
            f"of {wanted}-channel images"
        )


@register_job_kind
class AttackKind(RefereedKind):
    """Remove a watermark: fine-tune, prune or distill a run's model within a budget."""

    name = "attack"
    title = "attack a model"
    plugin_key = "attack"
    role = REMOVAL
    missing_run = "an attack needs the run whose model it attacks (--run RUN)"

    def plugin(self, name: str) -> Plugin[Any]:
        plugin = ATTACKS.get(name)
        if plugin.role != REMOVAL:
            raise ConfigError(
                f"{name!r} is a {plugin.role}: a detect phase or job, not {self.name} "
                f"(wmtui detect --method {name})"
            )
        return plugin

    def check(self, spec: JobSpec, *, inputs: bool) -> CheckedJob:
        """A chain (``spec.chain``, or ``a,b`` as the plugin) is checked step by step
        (:mod:`engine.jobs.chain`); one attack as every refereed job is."""
        if is_chained(spec):
            return check_chain_job(spec, inputs=inputs, missing_run=self.missing_run)
        return super().check(spec, inputs=inputs)

    def check_plugin_data(
        self, spec: JobSpec, checked: CheckedJob, data: DatasetMeta, budget: AttackerBudget
    ) -> None:
        if is_chained(spec):
            check_chain_data(checked, data, budget)
            return
        super().check_plugin_data(spec, checked, data, budget)

    def check_inputs(self, spec: JobSpec, source: Path, budget: AttackerBudget) -> CheckedJob:
        name = spec.plugin
        checked = check_attack(
            source,
            name,
            spec.params,
            budget,
            device=spec.device,
            eval_every=spec.eval_every,
            sweep=spec.sweep,
            role=REMOVAL,
            threshold=spec.threshold,
            reference_acc=spec.reference_acc,
        )
        params = checked.attack.params
        return CheckedJob(
            spec,
            params=params,
            budget=budget,
            manifest=attack_manifest(source, name, params, budget, spec.sweep),
            make=checked.job,
        )
