"""The recorded event stream of a run: curves across phases and the trigger pictures.

``events.jsonl`` is read line by line (a torn or foreign line is skipped: a crash mid-write
leaves one), folded the way the playground folds it into its plots, and its
``TriggerPreview`` events become PNGs: exactly the pictures the TUI showed, nothing more of
a key. A detector's ``reversed/*.png`` stand in when a recording has no reversed preview.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.errors import RunError
from engine.runs import EVENTS, TRIGGER_DIR

#: at most this many pictures per report (a session that switched triggers often has many)
MAX_TRIGGERS = 24
#: 28-pixel previews are stored 4x (nearest): browsers would blur them when enlarging
PNG_SCALE = 4


@dataclasses.dataclass
class Timeline:
    """Accuracy (%), retention (%) and loss over one x axis running across phases, as the
    playground plots them: each job phase starts where the last one's steps ended. Every
    line is a list of segments, one per phase, so no line joins two models."""

    accuracy: dict[str, list[list[tuple[float, float]]]] = dataclasses.field(default_factory=dict)
    loss: list[list[tuple[float, float]]] = dataclasses.field(default_factory=list)
    boundaries: list[tuple[float, str]] = dataclasses.field(default_factory=list)

    @property
    def empty(self) -> bool:
        lines = [*self.loss, *(s for segments in self.accuracy.values() for s in segments)]
        return not any(lines)


@dataclasses.dataclass
class Trigger:
    """A small picture as PNG bytes (enlarged, nearest neighbour), the phase that showed it,
    its name and its original size (height, width)."""

    phase: str
    name: str
    png: bytes
    size: tuple[int, int]


def read_events(path: Path) -> list[dict[str, Any]]:
    """Recorded events; a torn or foreign line is skipped (a crash mid-write leaves one)."""
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RunError(f"cannot read {path}: {exc}") from None
    out = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict):
            out.append(event)
    return out


def fold_timeline(events: list[dict[str, Any]]) -> Timeline:
    """The playground's shared x axis: a job phase starts at the last step plotted; a
    scenario's own phase marker names the boundary; boundaries at one x are merged."""
    timeline = Timeline()
    offset = last_x = 0.0
    scenario_phase, named = "", ""
    segment = -1

    def new_segment() -> None:
        nonlocal segment
        segment += 1
        timeline.loss.append([])
        for lines in timeline.accuracy.values():
            lines.append([])

    for event in events:
        kind = event.get("event")
        if kind == "phase" and event.get("status") == "start":
            info = event.get("info") if isinstance(event.get("info"), dict) else {}
            if "scenario" in info:
                scenario_phase = str(event.get("name", ""))
                continue
            name = str(event.get("name", ""))
            label = scenario_phase if scenario_phase and scenario_phase != named else name
            named = scenario_phase
            offset = last_x
            if timeline.boundaries and timeline.boundaries[-1][0] == offset:
                timeline.boundaries[-1] = (offset, f"{timeline.boundaries[-1][1]} / {name}")
            else:
                timeline.boundaries.append((offset, label))
            new_segment()
        elif kind == "metrics":
            if segment < 0:
                new_segment()
            x = offset + number(event.get("step"), 0.0)
            last_x = x
            loss = event.get("loss")
            if finite(loss):
                timeline.loss[segment].append((x, float(loss)))
            acc = event.get("test_acc")
            if finite(acc):
                _line(timeline, "test accuracy", segment).append((x, 100 * float(acc)))
            retention = event.get("retention")
            for key, value in retention.items() if isinstance(retention, dict) else ():
                if finite(value):
                    _line(timeline, f"retention {key}", segment).append((x, 100 * float(value)))
    return timeline


def _line(timeline: Timeline, name: str, segment: int) -> list[tuple[float, float]]:
    lines = timeline.accuracy.setdefault(name, [])
    while len(lines) <= segment:
        lines.append([])
    return lines[segment]


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and np.isfinite(value)


def number(value: Any, default: float) -> float:
    return float(value) if finite(value) else default


# -- trigger pictures --------------------------------------------------------------------------
def triggers_from_events(events: list[dict[str, Any]]) -> list[Trigger]:
    """The last preview of each name in each phase, as the playground showed them."""
    found: dict[tuple[str, str], Trigger] = {}
    phase = ""
    for event in events:
        kind = event.get("event")
        if kind == "phase" and event.get("status") == "start":
            info = event.get("info") if isinstance(event.get("info"), dict) else {}
            if "scenario" in info or not phase:
                phase = str(event.get("name", ""))
        elif kind == "trigger_preview":
            picture = preview_png(event)
            if picture is not None:
                name = str(event.get("name", "trigger"))
                found[(phase, name)] = Trigger(phase, name, *picture)
    return list(found.values())


def preview_png(event: dict[str, Any]) -> tuple[bytes, tuple[int, int]] | None:
    """A TriggerPreview's uint8 CHW pixels as an enlarged PNG; None when malformed."""
    shape, pixels = event.get("shape"), event.get("pixels")
    if not (isinstance(shape, list) and len(shape) == 3 and isinstance(pixels, str)):
        return None
    if not all(isinstance(s, int) and 0 < s <= 512 for s in shape) or shape[0] not in (1, 3):
        return None
    try:
        raw = base64.b64decode(pixels, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != shape[0] * shape[1] * shape[2]:
        return None
    array = np.frombuffer(raw, dtype=np.uint8).reshape(shape).transpose(1, 2, 0)
    picture = Image.fromarray(array[:, :, 0] if shape[0] == 1 else array)
    return png(picture), (shape[1], shape[2])


def png(picture: Image.Image, scale: int = PNG_SCALE) -> bytes:
    """PNG bytes enlarged ``scale`` times (nearest neighbour keeps pixels crisp), with no
    metadata: a browser would smooth a 28-pixel image shown at 112."""
    if picture.mode not in ("L", "RGB"):
        picture = picture.convert("RGB")
    if scale > 1:
        size = (picture.width * scale, picture.height * scale)
        picture = picture.resize(size, Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def reversed_pngs(folder: Path, phase: str) -> list[Trigger]:
    """A detector's ``reversed/*.png`` (already enlarged), re-encoded: validated, metadata
    dropped. Used when the recording holds no reversed preview."""
    out = []
    for path in sorted((folder / TRIGGER_DIR).glob("*.png"))[:MAX_TRIGGERS]:
        try:
            with Image.open(path) as picture:
                if picture.width * picture.height > 1024 * 1024:
                    continue
                picture.load()
                encoded = png(picture, scale=1)
                size = (picture.height, picture.width)
        except (OSError, UnidentifiedImageError, ValueError):
            continue
        out.append(Trigger(phase, f"reversed {path.stem}", encoded, size))
    return out


def source_triggers(manifest: dict[str, Any]) -> list[Trigger]:
    """An attack or detect run's true trigger: the preview its source run recorded."""
    source = manifest.get("source_run") or manifest.get("from")
    if not isinstance(source, str) or not source:
        return []
    events = read_events(Path(source) / EVENTS) if Path(source).is_dir() else []
    return [t for t in triggers_from_events(events) if t.name == "true trigger"][:1]
