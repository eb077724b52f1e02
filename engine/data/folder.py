"""``folder:PATH``: a user's own images, one subfolder per class, decoded once and cached.

Two layouts are read. ``PATH/train/<class>/...`` and ``PATH/test/<class>/...`` keep the user's
own split; class folders directly in ``PATH`` are split here, a fifth of each class going to
the test split. That split is seeded by :data:`SPLIT_SEED`, never by a run's seed: training,
embedding, attacks and verification of one model must all see the same test images, or a
model would be scored on pictures it was trained on. (The run's seed still draws the owner's
and the attacker's shares of the training split, in :mod:`engine.data.splits`.)

Every image must have one size; if every file is greyscale the set has one channel, otherwise
all are converted to RGB (alpha dropped). Decoding a few thousand PNGs takes seconds, so the
tensors are cached as safetensors under ``DATA_DIR/wmtui-cache``, keyed by the folder and by
every file's name, size and modification time: any change is decoded afresh, and the stale
copy is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from engine.data.base import ImageSet
from engine.data.cache import cached
from engine.errors import ConfigError, DataError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

PREFIX = "folder:"
SPLIT_SEED = 0
TEST_FRACTION = 0.2
CACHE_VERSION = 1
#: Pillow modes that hold one grey channel (what decides a 1-channel set)
GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


def folder_of(spec: str) -> Path:
    """The absolute folder of ``folder:PATH`` (``~`` expanded, relative to the working
    directory, ``..`` folded; symlinks are kept, so the name reads as the user wrote it)."""
    text = spec[len(PREFIX) :].strip()
    if not text:
        raise ConfigError("dataset 'folder:' needs a path: folder:PATH")
    return Path(os.path.abspath(os.path.expanduser(text)))


def canonical_folder(spec: str) -> str:
    """``folder:`` with an absolute path: what configs, manifests and keys record."""
    return PREFIX + str(folder_of(spec))


@dataclass(frozen=True)
class Layout:
    """The files of each split in load order, with their class indices."""

    root: Path
    classes: list[str]
    train: list[tuple[Path, int]]
    test: list[tuple[Path, int]]


def load_folder(spec: str, data_dir: Path) -> ImageSet:
    """The images of ``folder:PATH`` from the cache in ``data_dir``, decoding them when
    anything changed."""
    layout = scan(folder_of(spec))
    cache_dir = data_dir / "wmtui-cache"
    prefix = f"folder-{_digest(str(layout.root))[:10]}-"
    path = cache_dir / f"{prefix}{fingerprint(layout)[:16]}.safetensors"
    parts = cached(path, lambda: decode(layout))
    _remove_stale(cache_dir, prefix, keep=path)
    return ImageSet(
        PREFIX + str(layout.root), classes=layout.classes, source=str(layout.root), **parts
    )


# -- finding the files -----------------------------------------------------------------------
def scan(root: Path) -> Layout:
    """Both splits' files, or the one line that says what is wrong with the folder."""
    if not root.exists():
        raise DataError(f"folder:{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"folder:{root}: not a folder")
    names = {d.name for d in _subfolders(root)}
    if "train" in names and "test" in names:
        classes, train = _class_files(root / "train")
        test_classes, test = _class_files(root / "test")
        if test_classes != classes:
            only_train = sorted(set(classes) - set(test_classes))
            only_test = sorted(set(test_classes) - set(classes))
            raise DataError(
                f"folder:{root}: train/ and test/ hold different class folders "
                f"(only in train/: {', '.join(only_train) or '-'}; "
                f"only in test/: {', '.join(only_test) or '-'})"
            )
        gen = torch.Generator().manual_seed(SPLIT_SEED)
        return Layout(root, classes, _shuffled(train, gen), _shuffled(test, gen))
    for lone in ("train", "test"):
        if lone in names:
            other = "test" if lone == "train" else "train"
            raise DataError(
                f"folder:{root}: has {lone}/ but no {other}/; give both (each holding the class "
                "folders) or put the class folders directly in the folder"
            )
    classes, files = _class_files(root)
    train, test = _seeded_split(files, len(classes))
    return Layout(root, classes, train, test)


def _hidden(name: str) -> bool:
    return name.startswith(".")  # .DS_Store, .git, editors' swap files


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not _hidden(p.name))


def _class_files(folder: Path) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted folder names) and every file under each class folder."""
    classes = [d.name for d in _subfolders(folder)]
    if not classes:
        raise DataError(
            f"folder:{folder}: no class folders (put each class's images in a subfolder "
            "named after the class)"
        )
    if len(classes) == 1:
        raise DataError(
            f"folder:{folder}: only one class folder ({classes[0]}); a classifier needs two"
        )
    files: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        found = _files_under(folder / name)
        if not found:
            raise DataError(f"folder:{folder / name}: class folder holds no images")
        files.extend((path, label) for path in found)
    return classes, files


def _files_under(folder: Path) -> list[Path]:
    found = []
    for top, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not _hidden(d)]
        found.extend(Path(top) / n for n in names if not _hidden(n))
    return sorted(found)


def _shuffled(files: list[tuple[Path, int]], gen: torch.Generator) -> list[tuple[Path, int]]:
    """One seeded order mixing the classes: ``--train-size N`` keeps the first N images, which
    must not all be of the first class."""
    return [files[i] for i in torch.randperm(len(files), generator=gen).tolist()]


def _seeded_split(
    files: list[tuple[Path, int]], num_classes: int
) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """A fifth of each class to the test split (at least one image, never a class's last)."""
    gen = torch.Generator().manual_seed(SPLIT_SEED)
    by_class: list[list[tuple[Path, int]]] = [[] for _ in range(num_classes)]
    for item in files:
        by_class[item[1]].append(item)
    train: list[tuple[Path, int]] = []
    test: list[tuple[Path, int]] = []
    for mine in by_class:
        n_test = min(max(1, round(TEST_FRACTION * len(mine))), len(mine) - 1)
        order = torch.randperm(len(mine), generator=gen).tolist()
        test.extend(mine[i] for i in order[:n_test])
        train.extend(mine[i] for i in order[n_test:])
    return _shuffled(train, gen), _shuffled(test, gen)


# -- the cache key -----------------------------------------------------------------------------
def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprint(layout: Layout) -> str:
    """Changes whenever a file is added, removed, renamed, moved between classes or splits, or
    rewritten (size or modification time), and with the split's rules."""
    stamp = hashlib.sha256(f"v{CACHE_VERSION}|{SPLIT_SEED}|{TEST_FRACTION}|{layout.root}".encode())
    for split, files in (("train", layout.train), ("test", layout.test)):
        for path, label in files:
            try:
                info = path.stat()
            except OSError as exc:
                raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
            rel = path.relative_to(layout.root).as_posix()
            stamp.update(f"{split}|{label}|{rel}|{info.st_size}|{info.st_mtime_ns}\n".encode())
    return stamp.hexdigest()


def _remove_stale(cache_dir: Path, prefix: str, keep: Path) -> None:
    """Earlier decodings of the same folder are dead weight once its files changed."""
    try:
        olds = [p for p in cache_dir.glob(f"{prefix}*.safetensors") if p != keep]
    except OSError:
        return
    for old in olds:
        with contextlib.suppress(OSError):  # another process's, or a read-only cache
            old.unlink()


# -- decoding ----------------------------------------------------------------------------------
def decode(layout: Layout) -> dict[str, torch.Tensor]:
    """Every image as uint8 [N, C, H, W]: headers first (sizes and modes are checked before
    any pixel is decoded), then the pixels in one mode."""
    files = [path for path, _ in layout.train + layout.test]
    modes, first = set(), None
    for path in files:
        with _opened(path) as img:
            if first is None:
                first = (path, img.size)
            elif img.size != first[1]:
                w, h = img.size
                raise DataError(
                    f"folder:{layout.root}: images differ in size: {path} is {w}x{h}, "
                    f"{first[0]} is {first[1][0]}x{first[1][1]}; resize them to one size"
                )
            modes.add(img.mode)
    mode = "L" if modes <= GREY_MODES else "RGB"
    parts = {}
    for split, items in (("train", layout.train), ("test", layout.test)):
        parts[f"{split}_x"] = _pixels([p for p, _ in items], mode, first[1] if first else (0, 0))
        parts[f"{split}_y"] = torch.tensor([label for _, label in items], dtype=torch.long)
    return parts


def _opened(path: Path) -> PILImage:
    from PIL import Image, UnidentifiedImageError

    try:
        return Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: not an image Pillow can read ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _pixels(paths: list[Path], mode: str, size: tuple[int, int]) -> torch.Tensor:
    import numpy as np

    channels = 1 if mode == "L" else 3
    out = np.empty((len(paths), size[1], size[0], channels), dtype=np.uint8)
    for i, path in enumerate(paths):
        with _opened(path) as img:
            try:
                array = np.asarray(img.convert(mode), dtype=np.uint8)
            except (OSError, ValueError, SyntaxError) as exc:  # truncated or damaged data
                raise DataError(f"{path}: cannot decode the image ({_why(exc)})") from None
        out[i] = array.reshape(size[1], size[0], channels)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()
