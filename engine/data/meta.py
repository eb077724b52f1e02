"""What a job may know of a dataset before anything is loaded or written: its classes, image
shape and split sizes.

A label out of range, a fraction that selects no image or a trigger wider than the image is
refused while the job is checked, so no run folder is left behind by a job that could never
have started. The built-in datasets answer from a table (their files are large and need not be
present for the check); MNIST-style IDX files that are present give their real counts from
their headers (eight bytes each), so small or partial copies are judged by what they hold.
Any other name (a user's folder, a plugin) is loaded once through :func:`load_dataset`: its
loader is the only place that knows.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, DataError


@dataclasses.dataclass(frozen=True)
class DatasetMeta:
    """A dataset as the checks see it; sizes are after the train config's limits (a
    test-split-only job has ``train_size`` 0)."""

    name: str
    classes: int
    shape: tuple[int, int, int]
    train_size: int
    test_size: int
    #: where the dataset was looked for: a check may look up another dataset there (a key's
    #: source images)
    data_dir: str = ""

    def check_label(self, label: int, flag: str) -> None:
        """A class index the dataset has; the flag is named as the user typed it."""
        if not 0 <= label < self.classes:
            raise ConfigError(
                f"--{flag} {label}: the dataset has {self.classes} classes (0-{self.classes - 1})"
            )

    def check_selects(
        self, fraction: float, flag: str, what: str, given: Mapping[str, Any] | None = None
    ) -> int:
        """The number of training images ``fraction`` selects (rounded, as the splits round);
        none is refused with the smallest fraction that selects one."""
        count = round(fraction * self.train_size)
        if count >= 1:
            return count
        field = flag.replace("-", "_")
        shown = written(given, field, fraction)
        if self.train_size == 0:
            raise ConfigError(f"--{flag} {shown}: {self.name} has no training images here")
        smallest = shown_number(smallest_fraction(self.train_size))
        raise ConfigError(
            f"--{flag} {shown} selects no {what} of the {self.train_size:,} training images; "
            f"the smallest that selects one is {smallest}"
        )


#: classes, (C, H, W), training and test images of every built-in dataset
BUILTIN: dict[str, tuple[int, tuple[int, int, int], int, int]] = {
    "mnist": (10, (1, 28, 28), 60_000, 10_000),
    "fashion-mnist": (10, (1, 28, 28), 60_000, 10_000),
    "cifar10": (10, (3, 32, 32), 50_000, 10_000),
    "cifar100": (100, (3, 32, 32), 50_000, 10_000),
    "svhn": (10, (3, 32, 32), 73_257, 26_032),
    "gtsrb": (43, (3, 32, 32), 26_640, 12_630),
    "stl10-unlabeled": (10, (3, 32, 32), 100_000, 0),
    "synthetic": (10, (1, 28, 28), 60_000, 10_000),
}


def dataset_meta(
    name: str,
    data_dir: str | Path | None = None,
    *,
    train_size: int = 0,
    test_size: int = 0,
    train: bool = True,
) -> DatasetMeta:
    """The dataset ``name`` as a job with these train-config limits will see it (``auto``
    resolved as the loader resolves it; ``train`` False: the test split only)."""
    from engine.data import DATASETS, default_data_dir, load_dataset, resolve_auto

    folder = Path(data_dir) if data_dir else default_data_dir()
    if name == "auto":
        name, _ = resolve_auto(folder, train=train)
    DATASETS.get(name)  # an unknown name: the registry's line, with its suggestion
    if name not in BUILTIN:
        data = load_dataset(
            name, folder, train_size=train_size, test_size=test_size, train=train
        ).data
        return DatasetMeta(
            name, data.num_classes, data.shape, len(data.train_x), len(data.test_x), str(folder)
        )
    classes, shape, n_train, n_test = BUILTIN[name]
    if name == "synthetic":  # rendered to order: the limits are its sizes
        n_train, n_test = train_size or n_train, test_size or n_test
    else:
        n_train, n_test = idx_counts(name, folder) or (n_train, n_test)
        n_train = min(train_size, n_train) if train_size else n_train
        n_test = min(test_size, n_test) if test_size else n_test
    return DatasetMeta(name, classes, shape, n_train if train else 0, n_test, str(folder))


def idx_counts(name: str, folder: Path) -> tuple[int, int] | None:
    """(training, test) image counts of an MNIST-style set from its IDX headers, None when
    its files are not found or unreadable (the table's sizes stand; loading will say more)."""
    from engine.data.catalog import IDX_FOLDERS, _idx_candidates
    from engine.data.idx import IDX_FILES, find_idx_dir, idx_files

    if name not in IDX_FOLDERS:
        return None
    found = find_idx_dir(_idx_candidates(folder, name, IDX_FOLDERS[name]))
    if found is None:
        return None
    try:
        files = idx_files(found)
        counts = [idx_length(files[key]) for key in IDX_FILES if key.endswith("_y")]
    except (DataError, OSError, EOFError, gzip.BadGzipFile):
        return None
    return counts[0], counts[1]


def idx_length(path: Path) -> int:
    """The first dimension of an IDX file, read from its header alone."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as stream:
        header = stream.read(8)
    if len(header) < 8:
        raise DataError(f"{path}: truncated IDX header")
    return int.from_bytes(header[4:8], "big")


def smallest_fraction(total: int, need: int = 1) -> float:
    """The smallest fraction of two significant digits that selects ``need`` of ``total``
    images under the splits' rounding (``round(fraction * total)``)."""
    exact = (need - 0.5) / total
    exponent = math.floor(math.log10(exact)) - 1
    step = 10.0**exponent
    candidate = round(math.ceil(exact / step) * step, -exponent)
    while round(candidate * total) < need and candidate < 1.0:
        candidate = round(candidate + step, -exponent)
    return min(candidate, 1.0)


def shown_number(value: Any) -> str:
    """A number as a person writes it: ``1e-06``, ``0.05``, ``12``; never ``0.05000000001``."""
    if isinstance(value, float):
        short = format(value, "g")
        return short if float(short) == value else repr(value)
    return str(value)


def written(given: Mapping[str, Any] | None, field: str, value: Any) -> str:
    """``value`` as the user wrote it (the raw CLI or form text of ``field`` in ``given``),
    else as :func:`shown_number` writes it (a TOML number, a Python caller's value)."""
    raw = (given or {}).get(field, (given or {}).get(field.replace("_", "-")))
    if isinstance(raw, str) and raw.strip():
        return raw.strip()
    return shown_number(value)
