"""Null models for the decision threshold: trained once with the ``train`` job, kept in the
cache by their train config, and queried with fresh keys of a scheme.

A null model is what the SoK calls a model "not watermarked": the owner's recipe (dataset,
architecture, epochs, optimiser) with another seed and no key. Its folder name carries the
config's hash, so every scheme and every later threshold on the same recipe reuses it; one
that was stopped or failed is trained again from the start.

Key accuracy is measured as each scheme's verifier measures it: the share of the scheme's
held-out key samples (:meth:`~engine.watermarks.base.Watermark.key_samples`) classified as
the label the key claims: pattern and newlabel keys on stamped test images, abstract and
unrelated keys on their images, dual keys on the true embedding (the flipped square ->
y_W). A fresh key per (model, key) is drawn as the fresh-keys job draws one, so the
threshold covers the scheme rather than one trigger.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import stopping
from engine.config import TrainConfig
from engine.data.base import ImageSet
from engine.errors import UserError
from engine.jobs.fresh_keys import fresh_values
from engine.jobs.spec import JobSpec
from engine.metrics import predictions
from engine.runs import KEY_DIR, SUMMARY, RunDir
from engine.session import JobContext
from engine.watermarks import Key, KeyContext, get_scheme, load_key, parse_scheme_params
from engine.watermarks.claims import DEMO_KEY

#: what a null model's identity leaves out: where and how often it is evaluated, not what
IGNORED = ("device", "eval_every", "data_dir")
#: fresh keys of null model i are seeded KEY_SEED + i * keys + j
KEY_SEED = 50_000
#: schemes whose key is a set of images of a given number: the param that sets it
COUNT_PARAM = {"abstract": "count", "unrelated": "count", "datafree": "count"}


def slug(text: str) -> str:
    """``text`` as one safe file-name part; a name that had to change gets a short hash, so
    two folder datasets never share a record."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"
    if safe == text:
        return safe
    return f"{safe[-40:]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def null_folder(cache: Path, config: TrainConfig) -> Path:
    values = {k: v for k, v in config.to_dict().items() if k not in IGNORED}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
    name = f"{slug(config.dataset)}-{slug(config.model)}-seed{config.seed}-{digest}"
    return cache / "null-models" / name


def is_complete(folder: Path) -> bool:
    if not (folder / "model.safetensors").is_file() or not (folder / SUMMARY).is_file():
        return False
    try:
        return RunDir(folder).summary().get("status") == "completed"
    except (UserError, OSError, ValueError):  # a cut or corrupt summary: train it again
        return False


def null_model_runs(
    config: TrainConfig, seeds: list[int], archs: list[str], cache: Path, ctx: JobContext
) -> tuple[list[RunDir], int]:
    """A null model per seed (architectures cycled), trained with the train job where the
    cache lacks it; and how many were trained."""
    runs, trained = [], 0
    for i, seed in enumerate(seeds):
        stopping.check()
        null_config = config.replace(seed=seed, model=archs[i % len(archs)])
        folder = null_folder(cache, null_config)
        if is_complete(folder):
            ctx.log(f"null model {i + 1}/{len(seeds)}: reused {folder}")
        else:
            ctx.log(f"null model {i + 1}/{len(seeds)}: training into {folder}")
            spec = JobSpec.train(out=folder, overwrite=True, **null_config.to_dict())
            built = spec.validate().build()
            built.job(ctx)  # the one train job, its events in this job's stream
            trained += 1
        runs.append(RunDir(folder))
    return runs, trained


def fresh_key(
    scheme_name: str,
    index: int,
    seed: int,
    data: ImageSet,
    arch: str,
    key_size: int,
    data_dir: str,
    other: nn.Module,
) -> Key:
    """Key ``index`` of a scheme, with its secrets drawn fresh; a datafree key's labels come
    from ``other`` (another null model, standing for the owner's clean model), and so do the
    keys of a scheme that makes them from a trained model (frontier's and BlackMarks'
    adversarial examples): a null model is then measured on keys of a model it is not."""
    values = fresh_values(scheme_name, index, data.num_classes)
    if scheme_name == "dual":  # a claim nobody makes: the classroom key pair signs it
        values |= {"owner": f"null-{index}", "signing_key": DEMO_KEY}
    if scheme_name in COUNT_PARAM and key_size:
        values[COUNT_PARAM[scheme_name]] = key_size
    scheme = get_scheme(scheme_name)
    params = parse_scheme_params(scheme_name, values)
    scheme.check(params)
    ctx = KeyContext(data, arch, seed, data_dir)
    if scheme.needs_trained_model:
        ctx.trained_model = other
    if getattr(scheme, "data_free", False) and hasattr(scheme, "make_key"):
        return scheme.make_key(params, ctx, other, None)
    return scheme.keygen(params, ctx)


def key_accuracy(
    model: nn.Module, key: Key, data: ImageSet, key_size: int = 0
) -> tuple[float, int]:
    """(share of the key's held-out samples answered with the claimed label, samples): the
    first ``key_size`` of them (0: all)."""
    samples = get_scheme(key.scheme).key_samples(key, data)
    n = len(samples.y) if key_size <= 0 else min(key_size, len(samples.y))
    if n == 0:
        return 0.0, 0
    device = next(model.parameters()).device
    x, y = samples.x[:n].to(device), samples.y[:n].to(device)
    hits = predictions(model, x, samples.transform) == y
    return float(hits.float().mean()), n


def measure_nulls(
    runs: list[RunDir],
    scheme: str,
    keys: int,
    key_size: int,
    data: ImageSet,
    config: TrainConfig,
    device: torch.device,
    ctx: JobContext,
) -> tuple[list[float], list[float], int]:
    """Key accuracies (``keys`` fresh keys per model), the models' test accuracies
    and the fewest key samples any accuracy was measured on."""
    models = [run.load_model(device)[0] for run in runs]
    accs, tests, samples = [], [], 0
    for i, (run, model) in enumerate(zip(runs, models, strict=True)):
        tests.append(float(run.summary().get("test_acc") or 0.0))
        for j in range(keys):
            stopping.check()
            seed = KEY_SEED + i * keys + j
            other = models[(i + 1) % len(models)]
            key = fresh_key(
                scheme, seed, seed, data, config.model, key_size, config.data_dir, other
            )
            acc, n = key_accuracy(model, key, data, key_size)
            accs.append(acc)
            samples = n if not samples else min(samples, n)
        shown = ", ".join(f"{a:.4f}" for a in accs[-keys:])
        ctx.log(f"null model {i + 1}: key accuracy {shown}")
    return accs, tests, samples


def judge_run(
    run: RunDir, scheme: str, key_size: int, threshold: float, data: ImageSet, device: torch.device
) -> dict[str, Any]:
    """The input run's own key against the threshold (a scenario phase's verdict)."""
    if not (run.path / KEY_DIR).is_dir():
        return {}
    key = load_key(run.path / KEY_DIR)
    if key.scheme != scheme:
        return {}
    model, _ = run.load_model(device)
    acc, _ = key_accuracy(model, key, data, key_size)
    return {"source_run": str(run.path), "key_acc": acc, "threshold_verified": acc > threshold}
