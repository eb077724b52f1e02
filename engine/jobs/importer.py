"""Bring a model trained elsewhere into the playground: a state dict becomes a run folder.

Attacks, scans and verification all start from a run folder (``manifest.json`` for the data,
``model.json`` + ``model.safetensors`` for the model), so an outside model only needs that
folder to be a target like any other. Weights are read without unpickling code (safetensors,
or ``torch.load(weights_only=True)``), and every check (names, dataset, the weights fitting the
architecture) runs before the folder is made, so a refusal writes nothing.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine.config import TrainConfig
from engine.data import load_dataset
from engine.errors import RunError, UserError
from engine.jobs.common import check_config, new_run_manifest
from engine.models import Architecture, build_model
from engine.runs import MANIFEST, RunDir, import_pt, load_tensors

#: what ``import_state_dict`` reads, by file suffix
SUFFIXES = (".safetensors", ".pt", ".pth")


def read_state_dict(model_file: Path) -> dict[str, torch.Tensor]:
    """Tensors by name, from safetensors or a weights-only ``.pt``; nothing that runs code."""
    suffix = model_file.suffix.lower()
    if suffix not in SUFFIXES:
        raise RunError(
            f"{model_file}: unknown model file type {suffix or '(no suffix)'!r}; "
            f"save the state dict as {', '.join(SUFFIXES)}"
        )
    if not model_file.is_file():
        raise RunError(f"model file not found: {model_file}")
    if suffix == ".safetensors":
        return load_tensors(model_file, "model file")
    try:
        return import_pt(model_file)
    except RunError as exc:  # torch's own wording suggests unsafe loading: say what to do
        raise RunError(
            f"refusing {model_file}: not a plain tensor state dict (a pickled model or object, "
            "or not a torch file); save model.state_dict() with torch.save or safetensors"
        ) from exc


def fit_state_dict(
    model_file: Path, state: dict[str, torch.Tensor], name: str, shape: tuple[int, int, int], k: int
) -> tuple[nn.Module, Architecture]:
    """The model ``name`` on ``shape`` holding ``state``, with ``k`` outputs or, for a model
    trained with one extra (new-label) class, ``k + 1``; a misfit is one line naming the first
    thing torch found wrong for ``k`` outputs (the plain reading of the user's intent)."""
    first_error = ""
    for outputs in (k, k + 1):
        arch = Architecture(name, shape, outputs)
        try:
            model = build_model(arch)
        except UserError:
            if outputs == k:
                raise
            break  # the factory refuses k + 1 classes: report the k-class misfit
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            if outputs == k:
                first_error = first_problem(exc)
            continue
        return model, arch
    raise RunError(f"{model_file} does not fit {name} on {shape} with {k} classes: {first_error}")


def first_problem(exc: RuntimeError, limit: int = 200) -> str:
    """The first mismatch torch lists (its first line is only a header naming the class),
    cut short, plus how many more there are: an error line, not a page of key names."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    details = lines[1:] or lines or [type(exc).__name__]
    text = details[0] if len(details[0]) <= limit else details[0][: limit - 3] + "..."
    more = len(details) - 1
    return text + (f" (and {more} more mismatch{'es' if more > 1 else ''})" if more else "")


def import_state_dict(
    model_file: Path,
    model: str,
    dataset: str,
    out: Path,
    *,
    data_dir: str = "",
    train_size: int = 0,
    test_size: int = 0,
    overwrite: bool = False,
) -> RunDir:
    """Check everything, then write ``out`` as a completed run of ``model`` on ``dataset``.

    ``train_size``/``test_size`` are recorded so attacks on the run load the data the same
    way; the dataset itself is only opened here to learn its input shape and class count.
    """
    model_file, out = Path(model_file), Path(out)
    if (out / MANIFEST).exists() and not overwrite:
        raise RunError(f"{out} already holds a run; choose another --out or add --overwrite")
    state = read_state_dict(model_file)
    config = check_config(
        TrainConfig.from_mapping(
            {
                "dataset": dataset,
                "model": model,
                "data_dir": data_dir,
                "train_size": train_size,
                "test_size": test_size,
            }
        )
    )
    loaded = load_dataset(config.dataset, config.data_dir or None, train_size=1, test_size=1)
    data = loaded.data
    config = config.replace(dataset=data.name)  # "auto" resolved, so reloads never drift
    net, arch = fit_state_dict(model_file, state, config.model, data.shape, data.num_classes)
    manifest = new_run_manifest(config, "import") | {"imported_from": str(model_file)}
    run = RunDir.create(out, manifest, overwrite)
    run.save_model(net, arch)
    run.write_summary(
        {
            "status": "completed",
            "dataset": data.name,
            "model": config.model,
            "outputs": arch.num_classes,
            "imported_from": str(model_file),
        }
    )
    return run
