"""The ``detect`` job: find (and with ``params.remove``, remove) a watermark by trigger search.

The job streams ClassScan per class and TriggerPreview of the reversed trigger, writes the
reversed trigger under the output run, and with removal measures test accuracy and
retention before and after with the owner's key (never shown to the detector). Its checks,
:func:`check_detect`, load the attacker's data once to count the clean images; the job then
scans with that same data rather than loading it again.
"""

from __future__ import annotations

import dataclasses
import io
import math
from pathlib import Path
from typing import Any

import torch

from engine.attacks.budget import AttackerBudget
from engine.attacks.detection import Detection, Detector, ReversedTrigger, unlearn
from engine.attacks.registry import ATTACKS, DETECTOR, AttackEnv, make_attack
from engine.data.meta import DatasetMeta, shown_number, written
from engine.errors import ConfigError
from engine.events import Phase, TriggerPreview
from engine.jobs.attack import RefereedKind, check_attack
from engine.jobs.common import derived_manifest, resolve_device
from engine.jobs.referee import (
    AttackerView,
    ProbesFor,
    Suspect,
    default_probes,
    load_attacker_data,
    referee_scores,
    referee_trainer,
    refereed_job,
    run_dataset,
    white_box_marks,
)
from engine.jobs.spec import CheckedJob, JobSpec, loose, register_job_kind
from engine.registry import Plugin
from engine.runs import (
    TRIGGER_DIR,
    RunDir,
    atomic_write_bytes,
    atomic_write_json,
    save_tensors,
)
from engine.session import Job, JobContext

#: fewest clean images a scan accepts: half are held out to measure the sizes on
MIN_SCAN_IMAGES = 100


def detect_manifest(
    run_dir_in: Path, method: str, params: Any, budget: AttackerBudget
) -> dict[str, Any]:
    """Manifest of a detection run: the detector's setup beside the source run's config."""
    details = {"method": method, "params": dataclasses.asdict(params), "budget": budget.to_dict()}
    return derived_manifest(run_dir_in, "detect", details)


# -- checks ----------------------------------------------------------------------------------
def check_searchable(run: RunDir) -> None:
    """A trigger search compares classes: refuse a model with fewer than two outputs."""
    arch = run.architecture()
    if arch.num_classes < 2:
        raise ConfigError(
            f"the model of {run.path} has {arch.num_classes} output class: a trigger search "
            "compares classes and needs at least 2"
        )


def check_scan_images(
    have: int, train_size: int, budget: AttackerBudget, shown: str | None = None
) -> None:
    """Refuse a budget too small to search with, saying which --data-fraction would do
    (``shown``: the fraction as the user wrote it)."""
    if have >= MIN_SCAN_IMAGES:
        return
    needed = math.ceil(MIN_SCAN_IMAGES / max(train_size, 1) * 10_000) / 10_000
    raise ConfigError(
        f"the scan needs at least {MIN_SCAN_IMAGES} clean images; the attacker has {have} "
        f"(--data-fraction {shown or shown_number(budget.data_fraction)} of {train_size:,}): "
        f"use --data-fraction >= {shown_number(needed)}"
    )


@dataclasses.dataclass
class CheckedDetect:
    """A scan whose every input was checked (:func:`check_detect`), with the attacker's data
    it loaded for the check; :meth:`job` makes what a session runs."""

    name: str
    detector: Detector[Any]
    run: RunDir
    view: AttackerView
    budget: AttackerBudget
    device: str
    eval_every: int

    def job(self, out_run: RunDir | None, probes_for: ProbesFor | None = None) -> Job:
        """Detect (and with ``remove``, remove) a watermark in the run's model."""
        detector, run, budget, method = self.detector, self.run, self.budget, self.name
        device, eval_every = self.device, self.eval_every
        probes_for = probes_for or default_probes(run.path)
        p = detector.params

        def head(suspect: Suspect) -> dict[str, Any]:
            return {"method": method, "params": dataclasses.asdict(p)}

        def start_info(suspect: Suspect) -> dict[str, Any]:
            return {
                "detector": method,
                "steps": p.scan_steps,
                "classes": suspect.data.num_classes,
                "remove": p.remove,
                "rule": p.rule,
                "threshold": shown_threshold(detector, suspect.data.shape),
                "gap": p.gap,
                "dataset": suspect.data.name,
                "device": str(suspect.device),
            }

        def work(ctx: JobContext, suspect: Suspect, summary: dict[str, Any]) -> None:
            attacker = suspect.attacker
            summary["clean_images"] = len(attacker.clean_images())
            probes = probes_for(suspect.data, suspect.device) if p.remove else []
            marks = white_box_marks(run.path, suspect.data) if p.remove else []  # BER, read
            before = referee_scores(suspect.model, probes, marks) if probes else None
            trainer = referee_trainer(ctx, method, probes, eval_every, suspect.seed)
            env = AttackEnv(ctx, suspect.device, suspect.seed, trainer)
            detection = detector.detect(suspect.model, attacker, ctx, suspect.seed)
            summary |= detection.to_dict()
            ctx.log(describe(detection))
            if detection.trigger is not None:
                for name, image in detection.trigger.images.items():
                    ctx.emit(TriggerPreview.from_tensor(f"reversed-{name}", image))
                if out_run is not None:
                    summary["trigger_files"] = save_trigger(out_run, detection.trigger)
            if not p.remove:
                return
            steps = 0
            if detection.trigger is None:
                ctx.log(f"{method}: nothing flagged, the model is left as it is")
            else:
                info = {
                    "steps": detector.removal_steps(attacker),
                    "test_acc": before["test_acc"] if before else None,  # the scanned model's
                    "flagged_class": detection.flagged_class,
                    "dataset": suspect.data.name,
                    "device": str(suspect.device),
                }
                ctx.emit(Phase(f"{method}-remove", "start", info=info))
                steps = unlearn(
                    suspect.model,
                    detection.trigger,
                    attacker,
                    env,
                    p,
                    detector.removal_steps(attacker),
                )
            after = referee_scores(suspect.model, probes, marks)
            assert before is not None
            summary |= {
                "before": before,
                "after": after,
                "test_acc_before": before["test_acc"],
                "retention_before": before["retention"],
                "test_acc": after["test_acc"],
                "retention": after["retention"],
                "removal_steps": steps,
                "labeled_images": len(attacker.labeled_x),
            }
            if out_run is not None:
                out_run.save_model(suspect.model, suspect.arch)

        return refereed_job(
            run,
            budget,
            out_run,
            phase=method,
            device=device,
            head=head,
            start_info=start_info,
            work=work,
            end_info=lambda summary: {"flagged_class": summary.get("flagged_class")},
            view=self.view,
        )


def check_detect(
    run_dir_in: str | Path,
    method: str,
    params: Any,
    budget: AttackerBudget,
    *,
    device: str = "auto",
    eval_every: int = 100,
) -> CheckedDetect:
    """Every input check of a scan, before anything is written: the detector and its params,
    the budget, the run and its model, the device, and enough clean images (which loads the
    attacker's data on the device: the job scans with it)."""
    checked = check_attack(
        run_dir_in,
        method,
        params,
        budget,
        device=device,
        eval_every=eval_every,
        sweep=None,
        role=DETECTOR,
    )
    check_searchable(checked.run)
    view = load_attacker_data(checked.run, budget, resolve_device(device))
    have = len(view.attacker.labeled_x) or len(view.attacker.unlabeled_x)
    check_scan_images(have, len(view.data.train_x), budget)
    assert isinstance(checked.attack, Detector)
    return CheckedDetect(method, checked.attack, checked.run, view, budget, device, eval_every)


# -- what a scan leaves behind ---------------------------------------------------------------
def png_bytes(image: torch.Tensor, scale: int = 4) -> bytes:
    """A float [0,1] or uint8 [C,H,W] image as PNG, enlarged ``scale`` times (nearest)."""
    from PIL import Image

    if image.dtype != torch.uint8:
        image = (image.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    array = image.cpu().permute(1, 2, 0).numpy()
    mode = "L" if array.shape[2] == 1 else "RGB"
    picture = Image.fromarray(array[:, :, 0] if mode == "L" else array, mode)
    if scale > 1:
        picture = picture.resize(
            (picture.width * scale, picture.height * scale), Image.Resampling.NEAREST
        )
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def save_trigger(run: RunDir, trigger: ReversedTrigger) -> list[str]:
    """Write the reversed trigger under ``run/reversed/``: PNGs and safetensors."""
    folder = run.path / TRIGGER_DIR
    names = []
    for name, image in trigger.images.items():
        path = folder / f"class{trigger.cls}-{name}.png"
        atomic_write_bytes(path, png_bytes(image))
        names.append(str(path.relative_to(run.path)))
    if trigger.tensors:
        save_tensors(folder / f"class{trigger.cls}.safetensors", trigger.tensors)
        names.append(f"{TRIGGER_DIR}/class{trigger.cls}.safetensors")
    atomic_write_json(folder / "trigger.json", {"class": trigger.cls, "files": names})
    return names


def shown_threshold(detector: Detector[Any], shape: tuple[int, int, int]) -> float | None:
    """The size threshold T where the decision uses one (the GAN's --rule threshold, both,
    either); the MAD rule's line is drawn from the sizes themselves."""
    threshold = getattr(detector, "threshold", None)
    if threshold is None or detector.params.rule == "mad":
        return None
    return float(threshold(shape))


def describe(detection: Detection) -> str:
    sizes = " ".join(f"{s:.3g}" for s in detection.sizes)
    verdict = (
        f"class {detection.flagged_class} flagged"
        if detection.flagged_class is not None
        else "nothing flagged"
    )
    return (
        f"{detection.method}: {detection.size_kind} per class [{sizes}]; anomaly index of the "
        f"smallest {detection.anomaly_index:.2f}, next class {detection.gap_ratio:.2f}x its "
        f"size; {verdict}"
    )


# -- the job ---------------------------------------------------------------------------------
@register_job_kind
class DetectKind(RefereedKind):
    """Find a watermark's target class by per-class trigger search; optionally remove it."""

    name = "detect"
    title = "scan a model for a watermark"
    plugin_key = "method"
    role = DETECTOR
    missing_run = "a scan needs the run whose model it examines (--run RUN)"

    def plugin(self, name: str) -> Plugin[Any]:
        return ATTACKS.get(name, DETECTOR, kind="detection method")

    def check_inputs(self, spec: JobSpec, source: Path, budget: AttackerBudget) -> CheckedJob:
        name = spec.plugin
        data = run_dataset(RunDir.open(source))  # the budget is judged before data is loaded
        params = make_attack(name, spec.params, role=DETECTOR).params
        self.check_data(spec, CheckedJob(spec, params=params, budget=budget), data)
        checked = check_detect(
            source, name, spec.params, budget, device=spec.device, eval_every=spec.eval_every
        )
        params = checked.detector.params
        return CheckedJob(
            spec,
            params=params,
            budget=budget,
            manifest=detect_manifest(source, name, params, budget),
            make=checked.job,
            data=data,
        )

    def check_data(self, spec: JobSpec, checked: CheckedJob, data: DatasetMeta) -> None:
        """Also enough labelled images to search with, when no unlabelled source adds any."""
        super().check_data(spec, checked, data)
        budget = checked.budget
        if budget.unlabeled:
            return
        given = loose(spec.budget) if not isinstance(spec.budget, AttackerBudget) else {}
        have = round(budget.data_fraction * data.train_size)
        shown = written(given, "data_fraction", budget.data_fraction)
        check_scan_images(have, data.train_size, budget, shown)
