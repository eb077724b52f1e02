"""Run directories: manifest, model, checkpoint, key, metrics and event logs.

Every file is written atomically (temp file + rename) so a crash or a quit mid-write never
leaves half a file. Models are stored as safetensors plus a JSON architecture record and are
never unpickled; a ``.pt`` import goes through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine import __version__, stopping
from engine.deploy import DEPLOY_SPEC, DEPLOY_WEIGHTS, load_deployment, save_deployment, unwrap
from engine.errors import RunError
from engine.events import Event, Metrics, json_safe
from engine.io import (  # noqa: F401  (re-exported: run files use them by this name)
    atomic_write_bytes,
    atomic_write_json,
    load_tensors,
    read_json,
    save_tensors,
)
from engine.models import Architecture, build_model

MANIFEST = "manifest.json"
MODEL = "model.safetensors"
MODEL_ARCH = "model.json"
CHECKPOINT = "checkpoint.safetensors"
CHECKPOINT_STATE = "checkpoint.json"
SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
#: what a run writes beside its manifest; ``--overwrite`` removes them so that nothing of the
#: replaced run (above all an old key, which would referee the new model) survives
RUN_FILES = (
    MODEL,
    MODEL_ARCH,
    DEPLOY_SPEC,
    DEPLOY_WEIGHTS,
    CHECKPOINT,
    CHECKPOINT_STATE,
    SUMMARY,
    METRICS,
    EVENTS,
)
#: the manifest commands of runs ``wmtui resume`` continues (a checkpoint) or restarts
RESUMABLE = ("train", "embed", "tui")
KEY_DIR = "key"
TRIGGER_DIR = "reversed"
#: folders a run writes: key sets (``key``, ``key-2``...) and a detector's reversed triggers
RUN_FOLDER_PREFIXES = (KEY_DIR, TRIGGER_DIR)


def save_model(folder: Path, model: nn.Module, arch: Architecture, name: str = "model") -> None:
    """Weights as safetensors and the architecture as JSON, so loading needs no code objects.
    A deployed model (:mod:`engine.deploy`) saves its classifier here and its transforms in
    ``deploy.json`` beside it; ``arch`` is always the classifier's."""
    save_tensors(folder / f"{name}.safetensors", dict(unwrap(model).state_dict()))
    atomic_write_json(folder / f"{name}.json", arch.to_dict())
    if name == "model":
        save_deployment(folder, model)


def load_architecture(folder: Path, name: str = "model") -> Architecture:
    """The architecture record alone (cheap: checks need it before any weights load)."""
    record = read_json(folder / f"{name}.json", "model architecture record")
    try:
        return Architecture.from_dict(record)
    except (KeyError, TypeError, ValueError) as exc:
        raise RunError(
            f"model architecture record is corrupt: {folder / f'{name}.json'} ({exc})"
        ) from None


def load_model(
    folder: Path, device: torch.device | str = "cpu", name: str = "model"
) -> tuple[nn.Module, Architecture]:
    """Rebuild the architecture, then load weights; mismatches are corrupt files, not crashes.
    A run with a ``deploy.json`` comes back as the served model, behind its transforms."""
    arch = load_architecture(folder, name)
    model = build_model(arch)
    state = load_tensors(folder / f"{name}.safetensors", "model weights")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise RunError(f"model weights do not match {arch.name}: {first}") from None
    model = model.to(device)
    return (load_deployment(folder, model) if name == "model" else model), arch


def import_pt(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pt`` file, refusing anything that would need unpickling code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"model file not found: {path}") from None
    except Exception as exc:  # UnpicklingError for code objects, zip errors for garbage
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RunError(f"refusing {path}: not a plain tensor state dict ({first[:160]})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise RunError(f"refusing {path}: expected a dict of tensors")
    return state


def _flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Optimizer state -> tensors (safetensors) + plain values (JSON); no pickling."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for pid, entries in state["state"].items():
        plain["state"][str(pid)] = {}
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{pid}/{key}"] = value
            else:
                plain["state"][str(pid)][key] = value
    return tensors, plain


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {int(pid): dict(v) for pid, v in plain["state"].items()}
    for name, value in tensors.items():
        _, pid, key = name.split("/", 2)
        state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


class RunDir:
    """One experiment's folder (docs/architecture.md, "Run folders")."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        #: whether this job wrote its summary yet (a resumed run's old one does not count)
        self.summary_written = False

    # -- creating and opening -----------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, manifest: dict[str, Any], overwrite: bool = False) -> RunDir:
        run = cls(path)
        if (run.path / MANIFEST).exists() and not overwrite:
            raise RunError(
                f"{run.path} already holds a run; choose another --out or use `wmtui resume`"
            )
        try:
            run.path.mkdir(parents=True, exist_ok=True)
            probe = run.path / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise RunError(f"cannot write to {run.path}: {exc.strerror or exc}") from None
        run.clear_outputs()
        run.write_manifest(manifest)
        return run

    def clear_outputs(self) -> None:
        """Remove what an earlier run wrote here; files the user put in the folder stay."""
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
        for folder in self.path.iterdir():
            if folder.is_dir() and folder.name.startswith(RUN_FOLDER_PREFIXES):
                shutil.rmtree(folder)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not run.path.is_dir():
            raise RunError(f"run directory not found: {run.path}")
        run.manifest()  # validates
        return run

    def manifest(self) -> dict[str, Any]:
        data = read_json(self.path / MANIFEST, "run manifest")
        if not isinstance(data, dict) or "config" not in data:
            raise RunError(f"run manifest is corrupt: {self.path / MANIFEST} (no config)")
        return data

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.path / MANIFEST, {**versions(), **manifest})

    # -- models and checkpoints ---------------------------------------------------------
    def save_model(self, model: nn.Module, arch: Architecture) -> None:
        save_model(self.path, model, arch)

    def load_model(self, device: torch.device | str = "cpu") -> tuple[nn.Module, Architecture]:
        return load_model(self.path, device)

    def architecture(self) -> Architecture:
        return load_architecture(self.path)

    def save_checkpoint(
        self,
        model: nn.Module,
        arch: Architecture,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
    ) -> Path:
        """Model + optimizer + loop position; the model file is updated in the same breath."""
        opt_tensors, opt_plain = _flatten_optimizer(optimizer.state_dict())
        tensors = {f"model/{k}": v for k, v in model.state_dict().items()} | opt_tensors
        save_tensors(self.path / CHECKPOINT, tensors)
        atomic_write_json(self.path / CHECKPOINT_STATE, {**state, "optimizer": opt_plain})
        self.save_model(model, arch)
        return self.path / CHECKPOINT

    def load_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
        """(model state, optimizer state, loop state) of the last checkpoint."""
        state = read_json(self.path / CHECKPOINT_STATE, "checkpoint state")
        tensors = load_tensors(self.path / CHECKPOINT, "checkpoint")
        model_state = {k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")}
        opt_tensors = {k: v for k, v in tensors.items() if k.startswith("optimizer/")}
        try:
            optimizer = _unflatten_optimizer(opt_tensors, state.pop("optimizer"))
        except (KeyError, ValueError, TypeError) as exc:
            raise RunError(f"checkpoint state is corrupt: {exc}") from None
        return model_state, optimizer, state

    # -- streams and results ------------------------------------------------------------
    def event_sink(self) -> EventLog:
        return EventLog(self.path)

    def write_summary(self, summary: dict[str, Any]) -> None:
        if summary.get("status") == "stopped":
            summary = {**summary, **self.stop_record()}
        atomic_write_json(self.path / SUMMARY, json_safe(summary))
        self.summary_written = True

    def stop_record(self) -> dict[str, Any]:
        """What a stopped run's summary adds: the signal that stopped it (none: by hand) and
        where ``wmtui resume`` goes on from, so a run cut before its first checkpoint says
        it starts again from the beginning instead of leaving resume to fail."""
        record: dict[str, Any] = {}
        if stopping.signalled():
            record["signal"] = stopping.signalled()
        if self.manifest_command() in RESUMABLE:
            step = self.checkpoint_step()
            record["checkpoint_step"] = step
            record["resume"] = (
                "from the start: stopped before its first checkpoint"
                if step is None
                else f"from the checkpoint at step {step}"
            )
        return record

    def manifest_command(self) -> str:
        try:
            return str(self.manifest().get("command", ""))
        except RunError:
            return ""

    def has_checkpoint(self) -> bool:
        return (self.path / CHECKPOINT).is_file() and (self.path / CHECKPOINT_STATE).is_file()

    def checkpoint_step(self) -> int | None:
        """The step of the last checkpoint, or None when there is none (yet)."""
        if not self.has_checkpoint():
            return None
        try:
            return int(read_json(self.path / CHECKPOINT_STATE, "checkpoint state")["step"])
        except (RunError, KeyError, TypeError, ValueError):
            return None

    def summary(self) -> dict[str, Any]:
        return read_json(self.path / SUMMARY, "run summary")

    def events(self) -> list[dict[str, Any]]:
        """Recorded events for replay; a torn last line (crash mid-write) is skipped."""
        path = self.path / EVENTS
        if not path.is_file():
            raise RunError(f"no recorded events in {self.path}")
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out


class EventLog:
    """The worker-side sink that appends every event to events.jsonl (metrics also to
    metrics.jsonl); one line per write, flushed, so a reader sees whole lines only."""

    def __init__(self, folder: Path) -> None:
        self.events = (folder / EVENTS).open("a", encoding="utf-8")
        self.metrics = (folder / METRICS).open("a", encoding="utf-8")

    def __call__(self, event: Event) -> None:
        line = json.dumps(event.to_dict(), allow_nan=True) + "\n"
        self.events.write(line)
        self.events.flush()
        if isinstance(event, Metrics):
            self.metrics.write(line)
            self.metrics.flush()

    def close(self) -> None:
        self.events.close()
        self.metrics.close()


def versions() -> dict[str, Any]:
    """Package versions from their metadata: importing torchvision just to read its version
    cost the playground ~2 s before the first plotted point."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        vision = version("torchvision")
    except PackageNotFoundError:
        vision = "not installed"
    return {
        "wmtui_version": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torchvision": vision,
        "platform": platform.platform(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
