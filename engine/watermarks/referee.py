"""What the engine, as referee of an attack, measures with the owner's keys.

Attacks never import this; the attack job does, to stream retention while the adversary
works without the key.
"""

from __future__ import annotations

from pathlib import Path

import torch

from engine.data.base import ImageSet
from engine.metrics import Probe
from engine.watermarks.base import KEY_JSON, check_key_matches, get_scheme, load_key


def key_folders(run_dir: str | Path) -> list[Path]:
    """``key`` first, then the keys switched to mid-run (``key-2``, ``key-3``, ...)."""
    folders = [p for p in Path(run_dir).glob("key*") if (p / KEY_JSON).is_file()]
    return sorted(folders, key=lambda p: (p.name != "key", len(p.name), p.name))


def load_key_probes(run_dir: str | Path, data: ImageSet, device: torch.device) -> list[Probe]:
    """One retention probe per key of ``run_dir``, on held-out samples of ``data``."""
    probes = []
    for folder in key_folders(run_dir):
        key = load_key(folder)
        check_key_matches(key, data.name, data.shape, data.num_classes)
        probes.append(get_scheme(key.scheme).probe(key, data, folder.name))
    return probes
