"""The ``verify`` job: query a run's model with an owner's key; the ownership verdict."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from engine.config import TrainConfig
from engine.data import load_dataset
from engine.errors import ConfigError, RunError
from engine.jobs.common import resolve_device
from engine.jobs.spec import CheckedJob, JobKind, JobSpec, register_job_kind
from engine.jobs.threshold import threshold_verdict
from engine.runs import KEY_DIR, RunDir
from engine.session import Job, JobContext
from engine.watermarks import Key, check_key_matches, get_scheme, load_key
from engine.watermarks.claims import Claim, load_claim
from engine.watermarks.dual import verify_claim
from engine.watermarks.white_box import is_white_box


@dataclasses.dataclass
class CheckedVerify:
    run: RunDir
    key: Key | None
    key_dir: Path
    device: torch.device
    #: a dual-embedding claim handed over by its owner, instead of a key folder
    claim: Claim | None = None


def check_verify(
    run_path: Path,
    key_dir: Path | None,
    alpha: float,
    device: str,
    claim: Path | None = None,
    white_box: bool = False,
) -> CheckedVerify:
    """The significance, the run, the key (or claim) and the device, before anything is
    loaded; ``white_box`` must match how the key's scheme is read (weights or queries)."""
    if not 0.0 < alpha < 1.0:
        raise ConfigError(f"--alpha must be in (0, 1), got {alpha}")
    if claim is not None and key_dir is not None:
        raise ConfigError("give --key or --claim, not both")
    run = RunDir.open(run_path)
    if claim is not None:
        if white_box:
            raise ConfigError("--white-box: a dual-embedding claim is verified by queries")
        return CheckedVerify(run, None, claim, resolve_device(device), load_claim(claim))
    folder = key_dir if key_dir is not None else run.path / KEY_DIR
    key = load_key(folder)
    if white_box and not is_white_box(get_scheme(key.scheme)):
        raise ConfigError(
            f"--white-box: {key.scheme} keys are verified by querying the model, not from its "
            "weights; drop --white-box"
        )
    if is_white_box(get_scheme(key.scheme)) and not white_box:
        raise ConfigError(
            f"{key.scheme} is a white-box watermark, read from the model's weights: "
            "verify it with --white-box"
        )
    return CheckedVerify(run, key, folder, resolve_device(device))


def verify_run(
    run_path: Path,
    key_dir: Path | None = None,
    *,
    alpha: float = 1e-3,
    device: str = "auto",
    data_dir: str | None = None,
    white_box: bool = False,
) -> dict[str, Any]:
    """Query ``run_path``'s model with a key (default ``RUN/key``): the ownership verdict;
    ``white_box``: read a white-box key from the weights instead."""
    checked = check_verify(run_path, key_dir, alpha, device, white_box=white_box)
    return measure(checked, alpha, data_dir)


def measure(checked: CheckedVerify, alpha: float, data_dir: str | None) -> dict[str, Any]:
    """The verdict. The key must have been made for the run's dataset and input shape; the
    dataset is loaded as the run was trained (same test size), and the held-out samples come
    from its test set. Beside it, the SoK's verdict where a threshold was computed for the
    run's (dataset, architecture, scheme, key size): ``sok_threshold``,
    ``threshold_verified`` (key accuracy above it), ``threshold_source``; the decision, and
    the exit code of ``wmtui verify``, stay on the p-value."""
    run, key, dev = checked.run, checked.key, checked.device
    config = TrainConfig.from_mapping(run.manifest()["config"])
    model, arch = run.load_model(dev)
    loaded = load_dataset(
        config.dataset,
        data_dir or config.data_dir or None,
        device=dev,
        test_size=config.test_size,
        train=False,  # held-out samples only: the verifier never needs the training files
    )
    data = loaded.data
    if arch.num_classes not in (data.num_classes, data.num_classes + 1):
        raise RunError(
            f"model of {run.path} has {arch.num_classes} outputs; {data.name} has "
            f"{data.num_classes} classes"
        )
    if checked.claim is not None:
        verdict = verify_claim(model, checked.claim, data, alpha)
        scheme = "dual"
    else:
        assert key is not None
        check_key_matches(key, data.name, arch.in_shape, data.num_classes)
        verdict = get_scheme(key.scheme).verify(model, key, data, alpha)
        scheme = key.scheme
    if key is not None and is_white_box(get_scheme(key.scheme)):
        extra = {"white_box": True, "bits": verdict.n_key}  # read from the weights
    else:
        extra = {}
    return {
        "scheme": scheme,
        "key": str(checked.key_dir),
        "run": str(run.path),
        **verdict.to_dict(),
        **extra,
        # the SoK's threshold is on key accuracy: no such thing for a white-box key
        **({} if extra else threshold_verdict(model, key, data, arch.name, scheme, verdict)),
    }


@register_job_kind
class VerifyKind(JobKind):
    """Claim ownership: query a run's model with a key; the verdict and its p-value."""

    name = "verify"
    title = "verify ownership"
    in_scenarios = False

    def check(self, spec: JobSpec, *, inputs: bool) -> CheckedJob:
        if spec.source is None:
            raise ConfigError("verify needs the run whose model is queried")
        checked = check_verify(
            spec.source, spec.key, spec.alpha, spec.device, spec.claim, spec.white_box
        )

        def make(run: RunDir | None) -> Job:
            def job(ctx: JobContext) -> dict[str, Any]:
                return measure(checked, spec.alpha, spec.data_dir)

            return job

        return CheckedJob(spec, make=make)
