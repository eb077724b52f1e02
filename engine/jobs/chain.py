"""Stacked attacks: removal attacks run one after another on the same suspect, in one
refereed ``attack`` job.

The SoK (Lukas et al., S&P 2022, Section V-C; WRT ``configs/cifar10/attack_configs/
combined_attack{1,2,3,4}.yaml`` and ``wrt/attacks/removal/stacked_attack.py``) finds that no
single attack removes every scheme but combined ones do, so a chain is an attack job like any
other: one run folder, one budget, one summary whose top-level numbers (``test_acc``,
``retention``, ``removed``...) are the final model's, so the CLI, reports, recipes and sweeps
read it unchanged. What it adds is ``chain``: one summary per step, with the same keys as a
single attack's and the referee's scores before and after that step.

The budget is the attacker's for the whole chain: every step draws on the same attacker data
(the same labelled share, the same unlabelled source), and ``epochs``/``steps`` apply to each
training step, as WRT's configs give each stacked attack its own epochs. The chain's
``steps``, ``seconds`` and ``queries`` are the sums over its steps; its ``images`` and
``labels`` are the most any one step used, since the steps share one attacker's images and
counting them twice would overstate what the attacker needed.

Each step is announced as a phase of its own (``1:weight-shifting``, ``2:fine-prune``...),
so the playground's plots show where one ends and the next begins. A chain stopped mid-way
leaves ``status = "stopped"`` with the steps it finished.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from engine.attacks.budget import AttackerBudget, AttackerData
from engine.attacks.queries import QueryCounter
from engine.attacks.registry import (
    ATTACKS,
    EXTRACTION,
    REMOVAL,
    Attack,
    AttackEnv,
    AttackResult,
)
from engine.data.meta import DatasetMeta
from engine.errors import ConfigError, UserError
from engine.events import Phase, json_safe
from engine.jobs.api_watermark import recording_thief, thief_marks
from engine.jobs.common import derived_manifest, resolve_device
from engine.jobs.followup import hold
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
    white_box_marks,
)
from engine.jobs.spec import CheckedJob, JobSpec
from engine.jobs.success import SoKJudge, check_fraction, cost
from engine.jobs.white_box_verdict import WeightMark, WhiteBoxJudge
from engine.metrics import Probe
from engine.models import Architecture
from engine.runs import RunDir
from engine.session import Job, JobContext

#: what separates the steps of a chain given as one text (``--attack a,b,c``)
SEPARATOR = ","


@dataclasses.dataclass(frozen=True)
class ChainStep:
    """One checked step: the plugin with its parsed params, and its phase name."""

    index: int
    name: str
    attack: Attack[Any]
    #: the user's own values for this step, which messages quote
    given: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def phase(self) -> str:
        return f"{self.index}:{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"attack": self.name, "params": dataclasses.asdict(self.attack.params)}


def is_chain_text(text: str) -> bool:
    """``a,b`` names a chain; a plugin name never holds the separator."""
    return SEPARATOR in text


def chain_entries(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(name, loose params)`` per step, from the text ``a,b,c`` or a list whose entries are
    names or ``{attack = NAME, params = {...}}`` tables (a scenario's ``chain``); a malformed
    entry is one line naming its position."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(SEPARATOR) if part.strip()]
    if not isinstance(value, Sequence):
        raise ConfigError(f"a chain is a list of attacks, got {value!r}")
    entries = []
    for index, item in enumerate(value, 1):
        if isinstance(item, str):
            entries.append((item, {}))
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("attack"), str):
            raise ConfigError(
                f"chain step {index}: give an attack name or {{ attack = NAME, params = {{...}} }}"
                f", got {item!r}"
            )
        extra = set(item) - {"attack", "params"}
        if extra:
            raise ConfigError(
                f"chain step {index}: unknown key {sorted(extra)[0]!r} "
                "(a step takes attack and params)"
            )
        params = item.get("params", {})
        if not isinstance(params, Mapping):
            raise ConfigError(f"chain step {index}: params must be a table, got {params!r}")
        entries.append((item["attack"], dict(params)))
    return entries


def check_steps(value: Any, budget: AttackerBudget) -> list[ChainStep]:
    """Every step checked as a single attack is (name, params, budget), before anything is
    loaded or written; the line names the step. A chain of one is refused: it is the attack
    itself, and its summary would differ for no reason."""
    entries = chain_entries(value)
    if len(entries) < 2:
        names = ", ".join(name for name, _ in entries) or "nothing"
        raise ConfigError(
            f"a chain needs at least two attacks, got {names}; for one, use --attack NAME"
        )
    steps = []
    for index, (name, params) in enumerate(entries, 1):
        try:
            steps.append(ChainStep(index, name, checked_step(name, params, budget), params))
        except UserError as exc:
            raise ConfigError(f"chain step {index} ({name or 'empty'}): {exc}") from None
    return steps


def checked_step(name: str, params: Any, budget: AttackerBudget) -> Attack[Any]:
    """A removal attack with parsed params (an unknown name suggests the closest removal
    attack); a detector is refused, since it hands no model on to the next step."""
    if name in ATTACKS and ATTACKS.get(name).role != REMOVAL:
        raise ConfigError(
            f"{name!r} is a {ATTACKS.get(name).role}: it flags a model, it does not hand one "
            f"on to the next step (run it alone: wmtui detect --method {name})"
        )
    return checked_plugin(name, params, budget, REMOVAL)


def chain_label(steps: Sequence[ChainStep]) -> str:
    return SEPARATOR.join(step.name for step in steps)


def chain_manifest(
    run_dir_in: Path, label: str, steps: Sequence[ChainStep], budget: AttackerBudget
) -> dict[str, Any]:
    """The attacked run's manifest: the chain's name, every step with its params, the budget."""
    return derived_manifest(
        run_dir_in,
        "attack",
        {
            "name": label,
            "chain": [step.to_dict() for step in steps],
            "budget": budget.to_dict(),
            "sweep": None,
        },
    )


@dataclasses.dataclass
class CheckedChain:
    """A chain whose every input was checked (:func:`check_chain`); :meth:`job` makes what a
    session runs."""

    label: str
    steps: list[ChainStep]
    run: RunDir
    budget: AttackerBudget
    device: str
    eval_every: int
    #: the user's decision threshold and unmarked test accuracy (None: the cached record's)
    threshold: float | None = None
    reference_acc: float | None = None

    def job(self, out_run: RunDir | None, probes_for: ProbesFor | None = None) -> Job:
        """Run the steps in order on the suspect, refereeing each; write ``out_run``."""
        probes_for = probes_for or default_probes(self.run.path)
        chain = self

        def head(suspect: Suspect) -> dict[str, Any]:
            return {"attack": chain.label, "params": {}}

        def work(ctx: JobContext, suspect: Suspect, summary: dict[str, Any]) -> None:
            probes: list[Probe] = list(probes_for(suspect.data, suspect.device))
            marks = white_box_marks(chain.run.path, suspect.data)  # read from the weights
            if len(probes) == 1 and not marks:
                ctx.log("no key probes for this run: retention is not measured", "warning")
            before = referee_scores(suspect.model, probes, marks)
            summary |= {
                "labeled_images": len(suspect.attacker.labeled_x),
                "unlabeled_images": len(suspect.attacker.unlabeled_x),
                "before": before,
                "test_acc_before": before["test_acc"],
                "retention_before": before["retention"],
                "steps": 0,
                "chain": [],
            }
            ctx.log(f"before the chain ({chain.label}): {describe_scores(before)}")
            names = (suspect.data.name, suspect.arch.name)
            extraction = any(ATTACKS.get(s.name).family == EXTRACTION for s in chain.steps)
            sok = removal_judge(
                chain.run.path,
                names,
                before,
                marks,
                chain.threshold,
                chain.reference_acc,
                extraction=extraction,
            )
            model, arch, scores, claims = suspect.model, suspect.arch, before, []
            queries = QueryCounter(chain.budget.queries)  # one query budget for every step
            for step in chain.steps:
                # a follow-up (a scan mid-chain) takes the model this step works on; its
                # snapshot folder is named without the phase's colon
                hold(ctx, model, arch, out_run, step.phase.replace(":", "-"))
                referee = (probes, queries, marks)
                result, row = chain.run_step(
                    ctx, step, suspect, (model, arch), scores, referee, sok, out_run
                )
                summary["chain"].append(row)
                summary["steps"] += row["steps"]
                model, arch, scores = result.model, result.arch, row["after"]
                claims += result.claims
            summary |= {
                "after": scores,
                "test_acc": scores["test_acc"],
                "retention": scores["retention"],
                "model": arch.name,
                "info": {"chain": chain.label},
                "cost": chain_cost(summary["chain"]),
                **sok.judge(scores),
            }
            if out_run is not None:
                out_run.save_model(model, arch)
            ctx.log(f"after the chain: {describe_scores(scores)}")
            if claims:
                final = AttackResult(model, arch, summary["steps"], claims=claims)
                summary |= referee_claims(ctx, final, suspect, out_run)

        return refereed_job(
            self.run,
            self.budget,
            out_run,
            phase=self.label,
            device=self.device,
            head=head,
            start_info=lambda suspect: {},
            work=work,
            end_info=lambda summary: {"test_acc": summary.get("test_acc")},
            own_phases=True,
        )

    def run_step(
        self,
        ctx: JobContext,
        step: ChainStep,
        suspect: Suspect,
        current: tuple[nn.Module, Architecture],
        scores: dict[str, Any],
        referee: tuple[list[Probe], QueryCounter, list[WeightMark]],
        sok: SoKJudge | WhiteBoxJudge,
        out_run: RunDir | None = None,
    ) -> tuple[AttackResult, dict[str, Any]]:
        """One step as its own phase: the attack on the model the last step left, the
        referee's scores after it, and its row of the chain's summary. ``referee``: the
        probes, the query counter the steps share (the budget's cap is the chain's) and the
        white-box keys read from the weights."""
        probes, queries, marks = referee
        started, asked_before = time.monotonic(), queries.count
        # the attacker's data again, with a fresh record of what this step drew on
        attacker: AttackerData = dataclasses.replace(suspect.attacker, used=set())
        info = {
            "attack": step.name,
            "chain": self.label,
            "test_acc": scores["test_acc"],
            "steps": step.attack.planned_steps(attacker),
            "data_fraction": self.budget.data_fraction,
            "query_cap": self.budget.queries,
            "source_run": str(self.run.path),
            "dataset": suspect.data.name,
            "device": str(suspect.device),
        }
        total = len(self.steps)
        ctx.emit(Phase(step.phase, "start", index=step.index, total=total, info=info))
        trainer = referee_trainer(ctx, step.phase, probes, self.eval_every, suspect.seed, queries)
        env = AttackEnv(
            ctx, suspect.device, suspect.seed, trainer, track=probes.extend, queries=queries
        )
        with recording_thief(current[0], step.name):  # an API that remembers (DAWN)
            result = step.attack.run(*current, attacker, env)
        result = thief_marks(ctx, current[0], result, probes, suspect.data, self.run.path, out_run)
        after = referee_scores(result.model, probes, marks)
        images, labels = attacker.images_used()
        row = {
            "step": step.index,
            "phase": step.phase,
            "attack": step.name,
            "params": dataclasses.asdict(step.attack.params),
            "before": scores,
            "after": after,
            "test_acc": after["test_acc"],
            "retention": after["retention"],
            "test_acc_before": scores["test_acc"],
            "retention_before": scores["retention"],
            "steps": result.steps,
            "model": result.arch.name,
            "info": json_safe(result.info),
            "cost": cost(time.monotonic() - started, images, labels, queries.count - asked_before),
            **sok.judge(after),
        }
        ctx.log(f"step {step.phase}: {describe_scores(after)}")
        shown = ("test_acc", "removed", "kept_accuracy", "wm_accuracy", "threshold")
        end = {k: row[k] for k in shown}  # the playground's phase-end verdict line
        ctx.emit(Phase(step.phase, "end", index=step.index, total=total, info=end))
        return result, json_safe(row)


def chain_cost(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The chain's cost: time and queries summed over its steps; images and labels the most
    one step used (the steps share the attacker's one set of images: see the module)."""
    costs = [row["cost"] for row in rows]
    return cost(
        sum(c["seconds"] for c in costs),
        max((c["images"] for c in costs), default=0),
        max((c["labels"] for c in costs), default=0),
        sum(c["queries"] for c in costs),
    )


def check_chain(
    run_dir_in: str | Path,
    value: Any,
    budget: AttackerBudget,
    *,
    label: str = "",
    device: str = "auto",
    eval_every: int = 100,
    threshold: float | None = None,
    reference_acc: float | None = None,
) -> CheckedChain:
    """Every input check of a chain, before anything is written or loaded."""
    steps = check_steps(value, budget)
    threshold = check_fraction("--threshold", threshold)
    reference_acc = check_fraction("--reference-acc", reference_acc)
    check_eval_every(eval_every)
    run = RunDir.open(run_dir_in)
    resolve_device(device)
    require_run_dataset(run)
    label = label if label and not is_chain_text(label) else chain_label(steps)
    return CheckedChain(label, steps, run, budget, device, eval_every, threshold, reference_acc)


def is_chained(spec: JobSpec) -> bool:
    """An attack spec that runs a chain: ``chain`` given, or ``a,b`` as its plugin."""
    return spec.chain is not None or is_chain_text(spec.plugin)


def check_chain_job(spec: JobSpec, *, inputs: bool, missing_run: str) -> CheckedJob:
    """The ``attack`` kind's checks for a chain (``inputs=False``: a scenario's later phase,
    whose input run does not exist yet, checks the steps only)."""
    if spec.params:
        raise ConfigError(
            "a chain's params go with each step ({ attack = NAME, params = {...} }, or "
            "--STEP.FLAG on the command line), not with the chain"
        )
    if spec.sweep is not None:
        raise ConfigError(
            "--sweep runs one attack at several ratios; a chain takes none (sweep its step "
            "in a job of its own)"
        )
    budget = parsed_budget(spec.budget)
    value = spec.chain if spec.chain is not None else spec.plugin
    threshold = check_fraction("--threshold", spec.threshold)
    reference_acc = check_fraction("--reference-acc", spec.reference_acc)
    if not inputs:
        return CheckedJob(spec, params=check_steps(value, budget), budget=budget)
    if spec.source is None:
        raise ConfigError(missing_run)
    checked = check_chain(
        spec.source,
        value,
        budget,
        label=spec.plugin,
        device=spec.device,
        eval_every=spec.eval_every,
        threshold=threshold,
        reference_acc=reference_acc,
    )
    return CheckedJob(
        spec,
        params=checked.steps,
        budget=budget,
        manifest=chain_manifest(spec.source, checked.label, checked.steps, budget),
        make=checked.job,
    )


def check_chain_data(checked: CheckedJob, data: DatasetMeta, budget: AttackerBudget) -> None:
    """Every step's own limits on the suspect's dataset, the line naming the step."""
    for step in checked.params:
        try:
            step.attack.check_data(data, budget, step.given)
        except UserError as exc:
            raise ConfigError(f"chain step {step.index} ({step.name}): {exc}") from None
